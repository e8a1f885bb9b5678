"""Test helpers shared by the suites: databases, fixtures, the mesh harness."""
