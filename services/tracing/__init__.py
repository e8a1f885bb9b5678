"""The tracing service: receives OTLP spans from every service and derives the message traces of the REST API."""
