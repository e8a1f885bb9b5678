"""The router's logic, free of gRPC: instances, identities, message routing, API sends."""
