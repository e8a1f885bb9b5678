"""Settings of the tracing service."""

from __future__ import annotations

from servicekit.settings import MeshSettings


class Settings(MeshSettings):
    """The mesh settings plus what only the tracing service reads."""

    trace_retention_days: float = 30.0
    """Traces (and their spans) older than this many days are deleted; 0 keeps them forever. The public contract
    names this variable AUTOMAGIK_OMNI_TRACE_RETENTION_DAYS, hence no `tracing_` prefix."""
    tracing_retention_interval_seconds: float = 3600.0
    """How often the retention sweep runs (it also runs once at start-up)."""
