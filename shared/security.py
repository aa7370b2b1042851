"""Field encryption at rest, blind indexes and applicant links.

- Staff bearer tokens (:func:`issue_token`, :func:`require_role`) are in shared/tokens.py.
- Personal fields are stored encrypted with AES-256-GCM (:class:`FieldCipher`). Each value
  names the key it was sealed with, so keys can be rotated without rewriting every document,
  and is bound to the field it belongs to, so a value copied into another field is refused.
- Encrypted values cannot be searched, so fields we look up by (the applicant's email) also
  get a keyed hash (:class:`BlindIndexer`): equal inputs give equal indexes, but the index
  reveals nothing without the key.
- Applicants reach their registration through an unguessable link; only its SHA-256 is stored
  (:func:`hash_access_token`), so a database leak does not hand out working links.

Nothing here logs a token, key or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.logs import get_logger
from shared.settings import ServiceSettings

# Bearer tokens live in shared/tokens.py (claims, program scopes, revocation); their names
# are re-exported here, where callers have always found them.
from shared.tokens import (
    ALL_PROGRAMS,
    MAX_TOKEN_LIFETIME_S,
    Principal,
    Role,
    TokenError,
    issue_token,
    require_role,
    verify_token,
)

__all__ = [
    "ALL_PROGRAMS",
    "MAX_TOKEN_LIFETIME_S",
    "BlindIndexer",
    "DecryptionError",
    "FieldCipher",
    "Principal",
    "Role",
    "TokenError",
    "access_token_matches",
    "decode_key",
    "hash_access_token",
    "issue_token",
    "new_access_token",
    "normalize_email",
    "require_role",
    "verify_token",
]

log = get_logger(__name__)

KEY_BYTES = 32


def decode_key(value: str, *, setting: str) -> bytes:
    """Decode a base64 key from the environment, naming the setting (never the value) on error.

    A wrong-length key would otherwise surface much later as an obscure cryptography error,
    or, for HMAC, silently work with less strength than intended.
    """
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{setting} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{setting} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


# ------------------------------------------------------------------------ field encryption

FORMAT_VERSION = "v1"
NONCE_BYTES = 12
# Key ids travel inside the stored value, between dots.
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class DecryptionError(Exception):
    """An encrypted value that cannot be opened: malformed, tampered, unknown key, wrong field."""


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def retired_keys(settings: ServiceSettings) -> dict[str, bytes]:
    """ENCRYPTION_RETIRED_KEYS as ``{key_id: key}``."""
    keys: dict[str, bytes] = {}
    for entry in filter(None, (e.strip() for e in settings.encryption_retired_keys.split(","))):
        key_id, sep, encoded = entry.partition(":")
        if not sep:
            raise ValueError("ENCRYPTION_RETIRED_KEYS entries are '<id>:<base64 key>'")
        keys[key_id.strip()] = decode_key(encoded.strip(), setting="ENCRYPTION_RETIRED_KEYS")
    return keys


class FieldCipher:
    """AES-256-GCM for single fields, as ``v1.<key_id>.<b64url nonce>.<b64url ciphertext>``.

    ``keys`` holds every key that may still be found in stored values; new values are always
    sealed with ``current_key_id``. ``context`` (e.g. ``"registration:email"``) is the
    associated data: it is not stored, and opening with another context fails.
    """

    def __init__(self, keys: Mapping[str, bytes], current_key_id: str) -> None:
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"encryption key id {key_id!r} must match {_KEY_ID.pattern}")
            if len(key) != KEY_BYTES:
                raise ValueError(f"encryption key {key_id!r} must be {KEY_BYTES} bytes")
        if current_key_id not in keys:
            raise ValueError(f"current encryption key id {current_key_id!r} has no key")
        self._aead = {key_id: AESGCM(bytes(key)) for key_id, key in keys.items()}
        self.current_key_id = current_key_id

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, *, old_keys: Mapping[str, bytes] | None = None
    ) -> FieldCipher:
        """The current key from ENCRYPTION_KEY/ENCRYPTION_KEY_ID, plus the retired keys
        (ENCRYPTION_RETIRED_KEYS, or ``old_keys``) that values sealed before a rotation
        still name."""
        keys = dict(old_keys if old_keys is not None else retired_keys(settings))
        keys[settings.encryption_key_id] = decode_key(
            settings.encryption_key, setting="ENCRYPTION_KEY"
        )
        return cls(keys, settings.encryption_key_id)

    @staticmethod
    def _aad(context: str) -> bytes:
        if not context:
            raise ValueError("context must name the field, e.g. 'registration:email'")
        return context.encode()

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead[self.current_key_id].encrypt(
            nonce, plaintext.encode(), self._aad(context)
        )
        return ".".join((FORMAT_VERSION, self.current_key_id, _b64e(nonce), _b64e(sealed)))

    def decrypt(self, token: str, *, context: str) -> str:
        aad = self._aad(context)
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != FORMAT_VERSION:
            raise DecryptionError("not a v1 encrypted value")
        _, key_id, nonce_text, sealed_text = parts
        aead = self._aead.get(key_id)
        if aead is None:
            raise DecryptionError(f"unknown encryption key id {key_id!r}")
        try:
            nonce, sealed = _b64d(nonce_text), _b64d(sealed_text)
        except (binascii.Error, ValueError):
            raise DecryptionError("encrypted value is not valid base64") from None
        if len(nonce) != NONCE_BYTES:
            raise DecryptionError("encrypted value has a bad nonce")
        try:
            plain = aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise DecryptionError(
                f"encrypted value does not authenticate under key {key_id!r} and context "
                f"{context!r} (tampered, or stored for another field)"
            ) from None
        try:
            return plain.decode()
        except UnicodeDecodeError:
            raise DecryptionError("decrypted value is not UTF-8") from None

    def key_id_of(self, token: str) -> str:
        """The key a stored value was sealed with, so a job can find values to re-encrypt."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != FORMAT_VERSION:
            raise DecryptionError("not a v1 encrypted value")
        return parts[1]

    def encrypt_json(self, value: Mapping[str, Any], *, context: str) -> str:
        """For small structured fields (answers to screening questions)."""
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return self.encrypt(text, context=context)

    def decrypt_json(self, token: str, *, context: str) -> dict[str, Any]:
        text = self.decrypt(token, context=context)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise DecryptionError("decrypted value is not JSON") from None
        if not isinstance(value, dict):
            raise DecryptionError("decrypted value is not a JSON object")
        return value


# ----------------------------------------------------------------------------- blind index


def normalize_email(email: str) -> str:
    """One spelling per mailbox for lookups: ``" Ann@Example.org "`` and ``"ann@example.org"``."""
    return email.strip().lower()


def blind_index(key: bytes, value: str, *, context: str) -> str:
    """Hex HMAC-SHA256 of ``context`` and an already normalized ``value``.

    The context keeps indexes of different kinds of value apart; the NUL between them keeps
    ``("ab", "c")`` and ``("a", "bc")`` apart.
    """
    if not context or "\x00" in context:
        raise ValueError("context must be non-empty and contain no NUL")
    message = context.encode() + b"\x00" + value.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class BlindIndexer:
    """Blind indexes under BLIND_INDEX_KEY, with the normalization each kind of value needs."""

    EMAIL_CONTEXT = "email"

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"blind index key must be {KEY_BYTES} bytes")
        self._key = bytes(key)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> BlindIndexer:
        return cls(decode_key(settings.blind_index_key, setting="BLIND_INDEX_KEY"))

    def index(self, value: str, *, context: str) -> str:
        return blind_index(self._key, value, context=context)

    def email(self, value: str) -> str:
        return self.index(normalize_email(value), context=self.EMAIL_CONTEXT)


# ------------------------------------------------------------------ applicant access links


def new_access_token() -> str:
    """256 random bits for an applicant's link; shown once, stored only as its hash."""
    return secrets.token_urlsafe(32)


def hash_access_token(token: str) -> str:
    # A plain hash suffices: the token has 256 bits of entropy, so there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def access_token_matches(token: str, stored_hash: str) -> bool:
    """Constant-time comparison, so response timing does not leak how much of a hash matched."""
    return hmac.compare_digest(hash_access_token(token).encode(), stored_hash.encode())
