"""REST resources, one module per resource; each turns a request into one gRPC call."""
