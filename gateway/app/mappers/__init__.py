"""Conversions between the public JSON models and the mesh's protobuf messages."""
