"""The FastAPI edge of the Omni mesh: REST and webhook receivers in front of the gRPC services."""
