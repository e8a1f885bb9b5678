"""The ingress service: the inbox of everything that arrives from the channels."""
