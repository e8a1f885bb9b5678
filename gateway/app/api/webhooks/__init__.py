"""Webhook receivers, one module per provider; they forward raw bodies to ingress without an API key."""
