"""The mesh credential of the in-process test servers.

Every service's server requires the mesh token, so the suite sets one in the environment (tests/conftest.py) before
any settings are read; test clients present it through `mesh_as(<caller>)`, choosing which service they speak for
(which decides, for instance, which secrets the router gives them in clear).
"""

from __future__ import annotations

from servicekit.mesh_auth import MeshCredentials

TEST_MESH_TOKEN = "test-mesh-token-0123456789abcdef0123456789abcdef"


def mesh_as(caller: str, token: str = TEST_MESH_TOKEN) -> MeshCredentials:
    """Credentials of a test client speaking for mesh service `caller` (gateway, ingress, router, channels, tracing)."""
    return MeshCredentials(service=caller, token=token)
