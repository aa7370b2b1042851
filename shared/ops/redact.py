"""Personal data out of whatever the tool shows: message bodies and stored documents.

Keys are judged like the log redactor does (shared.logs.PERSONAL_KEYS, also as a
suffix), applied at every depth of a JSON value, plus a few keys that hold links or
secrets, and values that are personal whatever their key: an email address, a sealed
field (``v1.<key id>.<nonce>.<ciphertext>``). The CloudEvents attributes of an
envelope are shown as they are (ids, type, times: no personal data); its ``data`` is
walked key by key, so ``show`` stays useful.
"""

from __future__ import annotations

import re
from typing import Any

from shared.logs import PERSONAL_KEYS, REDACTED

# Secrets and links with tokens in them, besides the log redactor's keys.
EXTRA_KEYS = frozenset({"signing_url", "access_token", "access_token_hash", "link", "secret"})
ENVELOPE_ATTRIBUTES = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "datacontenttype",
        "dataschema",
        "subject",
        "correlationid",
        "causationid",
    }
)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
SEALED = re.compile(r"^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def is_personal_key(key: str) -> bool:
    k = key.lower()
    if k.startswith("sealed") or "token" in k or "secret" in k or "password" in k:
        return True
    keys = PERSONAL_KEYS | EXTRA_KEYS
    return k in keys or any(k.endswith("_" + p) for p in keys)


def is_personal_value(value: Any) -> bool:
    return isinstance(value, str) and bool(EMAIL.search(value) or SEALED.match(value))


def redact(value: Any) -> Any:
    """A copy of a JSON value with every personal key's value and personal string replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if is_personal_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if is_personal_value(value):
        return REDACTED
    return value


def redact_envelope(body: Any) -> Any:
    """An event envelope with its attributes kept and its data redacted key by key.

    Anything that is not an object (a poison message) is redacted as a whole value.
    """
    if not isinstance(body, dict):
        return redact(body)
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in ENVELOPE_ATTRIBUTES and not is_personal_value(value):
            out[key] = value
        elif key == "data":
            out[key] = redact(value) if isinstance(value, dict | list) else REDACTED
        else:
            out[key] = REDACTED if is_personal_key(key) else redact(value)
    return out


# --- stored documents: an allow-list, not a deny-list ----------------------------------

# What an operator may see of another service's document: states, ids, times, counts,
# codes. Anything else (free text, sealed fields, addresses, answers) is left out.
SAFE_KEYS = frozenset(
    {
        "_id",
        "status",
        "state",
        "standing",
        "kind",
        "type",
        "template",
        "channel",
        "attempts",
        "attempt",
        "version",
        "method",
        "provider",
        "currency",
        "amount_minor",
        "price_minor",
        "form_version",
        "error_code",
        "reason_code",
        "outcome",
        "position",
        "seats_taken",
        "capacity",
    }
)
SAFE_SUFFIXES = ("_id", "_ids", "_at", "_count", "_status", "_code", "_minor", "_ref")
SKIPPED = frozenset({"outbox", "inbox", "has_outbox"})


def _safe_key(key: str) -> bool:
    k = key.lower()
    if k in SKIPPED or is_personal_key(k):
        return False
    return k in SAFE_KEYS or k.endswith(SAFE_SUFFIXES)


def safe_fields(doc: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """The allow-listed fields of a document, nested objects included (never a sealed value)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        key = str(key)
        if isinstance(value, dict) and depth < 3 and not is_personal_key(key):
            if key.lower() in SKIPPED:
                continue
            nested = safe_fields(value, depth + 1)
            if nested:
                out[key] = nested
            continue
        if not _safe_key(key) or is_personal_value(value):
            continue
        if isinstance(value, list):
            if all(isinstance(v, str | int | float) for v in value):
                out[key] = [v for v in value if not is_personal_value(v)][:20]
            else:
                out[key] = f"[{len(value)} items]"
            continue
        out[key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out
