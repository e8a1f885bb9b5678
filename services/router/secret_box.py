"""Encryption of instance secrets at rest, under the master key `AUTOMAGIK_OMNI_SECRET_KEY` (a Fernet key).

Outside production an empty setting means "development": a key is generated once into `<data_dir>/secret.key`
(mode 0600) and reused on later starts, so a restarted router can still read what it stored. Production refuses
to start without an explicit key, because a generated one would silently make the data unreadable elsewhere.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from servicekit.errors import InternalError

log = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"


class SecretBox:
    """Encrypts and decrypts secret strings; "" stays "" so an unset secret needs no token."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ValueError("AUTOMAGIK_OMNI_SECRET_KEY is not a valid Fernet key") from exc

    @classmethod
    def generate(cls) -> SecretBox:
        """A box with a fresh random key (tests)."""
        return cls(Fernet.generate_key())

    @classmethod
    def from_settings(cls, secret_key: str, data_dir: Path, *, production: bool) -> SecretBox:
        """The box for the configured key, or the development key file (created on first use)."""
        if secret_key:
            return cls(secret_key.strip())
        if production:
            raise RuntimeError("AUTOMAGIK_OMNI_SECRET_KEY is required in production (a Fernet key)")
        return cls(load_or_create_key_file(data_dir / KEY_FILE_NAME))

    def encrypt(self, value: str) -> str:
        if not value:
            return ""
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        if not token:
            return ""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise InternalError("an instance secret cannot be decrypted with the current master key") from None


def load_or_create_key_file(path: Path) -> bytes:
    """Read the development key at `path`, creating it with mode 0600 when missing."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
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
    log.warning("generated a development master key at %s; set AUTOMAGIK_OMNI_SECRET_KEY in production", path)
    return key
