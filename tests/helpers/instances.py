"""An in-memory instance directory: the `InstanceDirectory` protocol over a dict, standing in for the router-fed
cache when a core is tested on its own."""

from __future__ import annotations

from servicekit import errors
from servicekit.instances import Instance


class DictDirectory:
    """InstanceDirectory over a dict of instances by name."""

    def __init__(self, *instances: Instance) -> None:
        self.instances = {i.name: i for i in instances}

    async def get(self, name: str) -> Instance:
        try:
            return self.instances[name]
        except KeyError:
            raise errors.NotFoundError(f"instance {name!r} not found") from None
