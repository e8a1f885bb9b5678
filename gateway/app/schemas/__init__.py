"""Pydantic models of the public JSON contract (request bodies and responses)."""
