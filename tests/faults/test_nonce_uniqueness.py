"""Matrix row 29: a million encryptions under one key never reuse a nonce.

AES-GCM's one hard rule ("NEVER REUSE A NONCE with a key"): FieldCipher draws a fresh
96-bit random nonce for every value (shared/security.py). NIST SP 800-38D bounds random
nonces to 2^32 encryptions per key; docs/reliability.md gives the volume this system
reaches and when to rotate (DATA_KEYS, then `python -m <service> reseal`).
"""

from __future__ import annotations

import os

import pytest

from shared.security import NONCE_BYTES, FieldCipher, _b64d

ENCRYPTIONS = 1_000_000


@pytest.mark.timeout(240)
def test_a_million_encryptions_under_one_key_repeat_no_nonce() -> None:
    cipher = FieldCipher({"k1": os.urandom(32)}, "k1")
    nonces: set[str] = set()
    for _ in range(ENCRYPTIONS):
        # The same value in the same place every time: only the nonce can differ.
        sealed = cipher.encrypt("同一个值", context="registrations:r1:name")
        _version, key_id, nonce, _body = sealed.split(".")
        nonces.add(nonce)
    assert key_id == "k1"
    assert len(nonces) == ENCRYPTIONS, f"{ENCRYPTIONS - len(nonces)} nonces repeated"
    assert len(_b64d(next(iter(nonces)))) == NONCE_BYTES == 12
