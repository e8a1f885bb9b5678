"""`python -m services.router.rotate_secrets` (`make rotate-secrets`): re-encrypt every stored secret with the newest
master key.

Rotation: put the new key first in `AUTOMAGIK_OMNI_SECRET_KEYS` (keeping the old ones after it), restart the router
(it now encrypts with the new key and still reads the old tokens), run this command, then remove the old keys. The
router may keep running meanwhile: each row is rewritten in its own transaction. Exit status 0 when every value is
under the newest key, 2 when the keys cannot open what is stored (nothing is changed then).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from servicekit.database import migrate, open_database
from servicekit.logs import configure_logging
from services.router.config import Settings
from services.router.secret_box import SecretBox
from services.router.storage import MIGRATIONS, SCHEMA
from services.router.stored_secrets import RotationReport, UnreadableSecretsError, rotate_stored_secrets

log = logging.getLogger("services.router.rotate_secrets")


async def rotate(settings: Settings) -> RotationReport:
    """Open the router's database with the configured keys and rotate every stored secret."""
    box = SecretBox.for_router(settings)
    db = await open_database(settings.database_url_for("router"), SCHEMA)
    try:
        await migrate(db, MIGRATIONS, lock_key=SCHEMA)
        return await rotate_stored_secrets(db, box)
    finally:
        await db.close()


def main() -> int:
    settings = Settings()
    configure_logging("rotate-secrets", settings.log_level)
    try:
        report = asyncio.run(rotate(settings))
    except (RuntimeError, ValueError) as exc:  # no key in production, a malformed key, unreadable secrets
        kind = "unreadable secrets" if isinstance(exc, UnreadableSecretsError) else "bad key settings"
        print(f"rotate-secrets: {kind}: {exc}", file=sys.stderr)
        return 2
    print(
        f"rotate-secrets: {report.rows} row(s) checked, {report.rewritten_rows} rewritten "
        f"({report.rewritten_values} value(s) re-encrypted, {report.current_values} already under the newest key)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
