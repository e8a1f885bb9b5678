"""Ingress logic without gRPC: the Evolution parser, the accept path and the durable dispatcher."""
