"""Who is calling: a mesh service, the admin, or a key scoped to one instance — and what each may reach.

The gateway resolves a REST caller's `x-api-key` to a `Principal`; the gRPC servers resolve their callers' metadata
(the mesh credential, or `x-api-key` on the public RPCs) to one and keep it in a context variable for the call. Both
ask the same two questions through this module, so a scoped key sees the same thing over REST and over gRPC: another
instance does not exist for it (404), and admin operations are forbidden (403).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from servicekit.errors import NotFoundError, PermissionDeniedError

PrincipalKind = Literal["mesh", "admin", "scoped"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    `mesh` is a service of the mesh (`service` names it: "gateway", "ingress", ...); `admin` holds the admin key;
    `scoped` holds a key of one instance (`instance_name`, `key_id`).
    """

    kind: PrincipalKind
    service: str = ""
    instance_name: str = ""
    key_id: str = ""

    @property
    def is_scoped(self) -> bool:
        """True for a key that reaches one instance only."""
        return self.kind == "scoped"

    def reaches(self, instance_name: str) -> bool:
        """True when the caller may see `instance_name`."""
        return not self.is_scoped or instance_name == self.instance_name

    def require_instance(self, instance_name: str) -> None:
        """Raise `NotFoundError` (as for a missing instance, so names cannot be probed) unless the caller reaches it."""
        if not self.reaches(instance_name):
            raise NotFoundError(f"instance {instance_name!r} not found", reason="INSTANCE_NOT_FOUND")

    def require_admin(self) -> None:
        """Raise `PermissionDeniedError` for a scoped key: it may not do what only the operator may."""
        if self.is_scoped:
            raise PermissionDeniedError("this API key is scoped to one instance", reason="ADMIN_ONLY")


SCOPED_KEY_PREFIX = "omni_sk_"
"""Every scoped API key starts with this, so a caller holding anything else is refused without a lookup."""

ADMIN = Principal("admin")
"""The holder of the admin key (AUTOMAGIK_OMNI_API_KEY)."""

MESH = Principal("mesh", service="mesh")
"""The principal of in-process calls that carry no metadata (a server run without its auth interceptor)."""

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("omni_principal", default=MESH)


def current_principal() -> Principal:
    """The caller of the RPC being served (MESH outside any authenticated call)."""
    return _current.get()


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Make `principal` the current caller inside the block."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)
