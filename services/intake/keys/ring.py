"""Master keys: they wrap each lead's key in the database, so a copy of the key table
(a dump, a backup) without them opens nothing. Pure but for the process-wide ring."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.crypto import KEY_BYTES, LeadKey

# Dev mode's master key when none is configured (documented, like the dev Zoom secret);
# production refuses it.
DEV_MASTER_KEY_ID = "dev"
DEV_MASTER_KEY = base64.urlsafe_b64encode(b"leadflow-dev-master-key-32-bytes").decode()
_IV_BYTES = 12


def decode_master(text: str) -> bytes:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a master key is {KEY_BYTES} bytes in base64url, got {len(raw)}")
    return raw


class KeyRing:
    """The master keys by id; new leads' keys are wrapped by `current`, older ones are
    unwrapped by whichever wrapped them (rotation: add a key, make it current, rewrap)."""

    def __init__(self, masters: dict[str, bytes], current: str) -> None:
        if current not in masters:
            raise ValueError(f"the current master key {current!r} is not configured")
        self._masters = {kid: AESGCM(key) for kid, key in masters.items()}
        self.current = current

    def wrap(self, lead_id: str, key: LeadKey, master_id: str | None = None) -> bytes:
        """`key` sealed under a master key (the current one unless named): iv || ct."""
        iv = os.urandom(_IV_BYTES)
        master = self._masters[master_id or self.current]
        return iv + master.encrypt(iv, key.key, _aad(lead_id, key.kid))

    def unwrap(self, lead_id: str, kid: str, master_id: str, wrapped: bytes) -> LeadKey | None:
        """The lead's key, or None when its master key is gone or the bytes are not its."""
        master = self._masters.get(master_id)
        if master is None:
            return None
        try:
            return LeadKey(
                kid, master.decrypt(wrapped[:_IV_BYTES], wrapped[_IV_BYTES:], _aad(lead_id, kid))
            )
        except (InvalidTag, ValueError):
            return None


def _aad(lead_id: str, kid: str) -> bytes:
    return f"leadflow-key/1|{lead_id}|{kid}".encode()


_ring = KeyRing({DEV_MASTER_KEY_ID: decode_master(DEV_MASTER_KEY)}, DEV_MASTER_KEY_ID)


def use(ring: KeyRing) -> None:
    """The process's ring (the intake app sets it from its settings at creation)."""
    global _ring
    _ring = ring


def ring() -> KeyRing:
    return _ring
