"""Benchmarks of the running mesh (`make bench`)."""
