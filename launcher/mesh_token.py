"""A mesh credential for the processes the launcher starts, so `make run` is closed by default.

Every service refuses to start without the mesh credential. When none is configured (neither in the environment
nor in `.env`) and this is not production, the launcher makes up a random token for this run and hands it to its
children: only they know it, so nothing else on the machine can call the mesh. Production must configure one.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from servicekit.mesh_auth import MTLS_VARIABLES, TOKEN_VARIABLE
from servicekit.settings import MeshSettings

PRODUCTION_NAMES = frozenset({"production", "prod"})


def with_mesh_token(env: Mapping[str, str], *, read_dotenv: bool = True) -> dict[str, str]:
    """`env` plus a fresh `AUTOMAGIK_OMNI_MESH_TOKEN`, unless a token or mTLS is configured or this is production.

    With `read_dotenv`, what `.env` configures counts too (the children read it); the local meshes of the tests and
    the demo pass False, their environment being complete by design.
    """
    merged = dict(env)
    if any(merged.get(name) for name in (TOKEN_VARIABLE, *MTLS_VARIABLES)):
        return merged
    if merged.get("ENVIRONMENT", "").lower() in PRODUCTION_NAMES:
        return merged
    if read_dotenv:
        configured = MeshSettings()
        if configured.mesh_token or configured.mtls_cert or configured.is_production:
            return merged
    merged[TOKEN_VARIABLE] = secrets.token_urlsafe(32)
    return merged
