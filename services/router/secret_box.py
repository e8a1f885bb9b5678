"""Encryption of instance secrets at rest, under the master keys (Fernet keys).

`AUTOMAGIK_OMNI_SECRET_KEYS` is a comma list, newest first: the first key encrypts, every key decrypts, so a key can
be rotated without downtime (add the new key in front, restart, run `python -m services.router.rotate_secrets`, then
drop the old key). `AUTOMAGIK_OMNI_SECRET_KEY` is the single-key form; when both are set, a SECRET_KEY missing from
the list is kept as the oldest decryption key, so an old `.env` line never makes stored data unreadable.

Outside production no key at all means "development": a key is generated once into `./.secrets/master.key` (or
`AUTOMAGIK_OMNI_SECRET_KEY_FILE`), mode 0600, apart from the databases so a copied data directory does not carry
the key that opens it. A key file left by earlier versions at `<data_dir>/secret.key` is moved there. Production
refuses to start without an explicit key, because a generated one would silently make the data unreadable elsewhere.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from servicekit.errors import InternalError

if TYPE_CHECKING:
    from services.router.config import Settings

log = logging.getLogger(__name__)

LEGACY_KEY_FILE_NAME = "secret.key"
"""Where versions before the key file moved kept the development key, beside the databases."""
DEFAULT_KEY_FILE = Path(".secrets") / "master.key"
"""The development key file, relative to the working directory (the repository when run by `make run`)."""
KEY_VARIABLES = "AUTOMAGIK_OMNI_SECRET_KEYS / AUTOMAGIK_OMNI_SECRET_KEY"
"""How error messages name the settings, so an operator knows what to fix."""


class SecretBox:
    """Encrypts with the newest master key and decrypts with any of them; "" stays "" so an unset secret needs no
    token."""

    def __init__(self, keys: str | bytes | Sequence[str | bytes]) -> None:
        listed = [keys] if isinstance(keys, str | bytes) else list(keys)
        if not listed:
            raise ValueError(f"{KEY_VARIABLES}: no master key given")
        fernets: list[Fernet] = []
        for position, key in enumerate(listed, start=1):
            try:
                fernets.append(Fernet(key.strip()))
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"{KEY_VARIABLES}: key {position} is not a valid Fernet key (32 url-safe base64 bytes)"
                ) from exc
        self._newest = fernets[0]
        self._all = MultiFernet(fernets)
        self.key_count = len(fernets)

    @classmethod
    def generate(cls) -> SecretBox:
        """A box with a fresh random key (tests)."""
        return cls(Fernet.generate_key())

    @classmethod
    def from_settings(
        cls,
        secret_key: str,
        data_dir: Path,
        *,
        production: bool,
        secret_keys: str = "",
        key_file: Path | None = None,
    ) -> SecretBox:
        """The box for the configured keys, or the development key file (created on first use)."""
        keys = [k.strip() for k in secret_keys.split(",") if k.strip()]
        single = secret_key.strip()
        if single and single not in keys:
            keys.append(single)
        if keys:
            return cls(keys)
        if production:
            raise RuntimeError(f"{KEY_VARIABLES} is required in production (Fernet keys, newest first)")
        path = key_file if key_file is not None else DEFAULT_KEY_FILE
        migrate_legacy_key_file(data_dir / LEGACY_KEY_FILE_NAME, path)
        return cls(load_or_create_key_file(path))

    @classmethod
    def for_router(cls, settings: Settings) -> SecretBox:
        """The box the router's settings describe (the router and `rotate_secrets` open it the same way)."""
        return cls.from_settings(
            settings.secret_key,
            settings.data_dir,
            production=settings.is_production,
            secret_keys=settings.secret_keys,
            key_file=Path(settings.secret_key_file),
        )

    def encrypt(self, value: str) -> str:
        if not value:
            return ""
        return self._newest.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        if not token:
            return ""
        try:
            return self._all.decrypt(token.encode()).decode()
        except InvalidToken:
            raise InternalError(
                f"an instance secret cannot be decrypted with the master keys ({KEY_VARIABLES})"
            ) from None

    def can_decrypt(self, token: str) -> bool:
        """Whether one of the keys opens `token` ("" always opens)."""
        if not token:
            return True
        try:
            self._all.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def is_current(self, token: str) -> bool:
        """Whether `token` is encrypted with the newest key already (a rotation can skip it)."""
        if not token:
            return True
        try:
            self._newest.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, token: str) -> str:
        """`token` re-encrypted under the newest key; raises `InternalError` when no key opens it."""
        if not token:
            return ""
        try:
            return self._all.rotate(token.encode()).decode()
        except InvalidToken:
            raise InternalError(
                f"an instance secret cannot be decrypted with the master keys ({KEY_VARIABLES})"
            ) from None


def migrate_legacy_key_file(legacy: Path, target: Path) -> None:
    """Move a development key kept beside the databases to `target`, unless `target` exists already (then the legacy
    file is left alone and a warning says which one is used)."""
    if not legacy.exists() or legacy.resolve() == target.resolve():
        return
    if target.exists():
        if legacy.read_bytes().strip() != target.read_bytes().strip():
            log.warning("ignoring the old development key %s: %s exists and is used", legacy, target)
        return
    _make_private_dir(target.parent)
    shutil.move(str(legacy), str(target))
    os.chmod(target, 0o600)
    log.warning("moved the development master key from %s to %s (kept apart from the databases)", legacy, target)


def _make_private_dir(path: Path) -> None:
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    if created:
        os.chmod(path, 0o700)


def load_or_create_key_file(path: Path) -> bytes:
    """Read the development key at `path`, creating it with mode 0600 when missing."""
    if path.exists():
        return path.read_bytes().strip()
    _make_private_dir(path.parent)
    key = Fernet.generate_key()
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    try:
        os.link(temp, path)  # atomic and refuses to overwrite: a concurrent starter's key wins
    except FileExistsError:
        return path.read_bytes().strip()
    finally:
        temp.unlink(missing_ok=True)
    log.warning("generated a development master key at %s; set AUTOMAGIK_OMNI_SECRET_KEYS in production", path)
    return key
