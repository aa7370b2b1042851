"""An event as it travels: the CloudEvents JSON body, its data sealed when it is personal.

Events that carry personal data (``EventData.personal``: a contact, a signing link)
travel with ``data`` empty and the data sealed in the ``sealeddata`` extension
attribute (AES-GCM under ENCRYPTION_KEY, bound to the event's id), so the broker's
queues, its dead-letter queues and whoever reads them see no name, address or link in
clear; the consuming service opens it. Every other event travels in clear, and the
public exchange carries no personal data at all.
"""

from __future__ import annotations

import json
from typing import Any

from shared.events import EVENT_TYPES, Envelope
from shared.security import DecryptionError, FieldCipher

SEALED = "sealeddata"  # a CloudEvents extension attribute: lower-case letters only


class UnreadableBody(Exception):
    """A body that is not an event this service can read; the text names no value."""


def is_personal(event_type: str) -> bool:
    model = EVENT_TYPES.get(event_type)
    return model is not None and model.personal


def _context(event_id: object) -> str:
    return f"event:{event_id}"


def body_of(envelope: Envelope, cipher: FieldCipher | None) -> bytes:
    """The body to publish; a personal event's data sealed (refused with no cipher)."""
    if not is_personal(envelope.type):
        return envelope.model_dump_json().encode()
    if cipher is None:
        raise ValueError(f"{envelope.type} carries personal data: publish it with a cipher")
    wire = envelope.model_dump(mode="json")
    data = json.dumps(wire["data"], separators=(",", ":"), ensure_ascii=False)
    wire["data"] = {}
    wire[SEALED] = cipher.encrypt(data, context=_context(envelope.id))
    return json.dumps(wire, ensure_ascii=False).encode()


def open_body(raw: dict[str, Any], cipher: FieldCipher | None) -> dict[str, Any]:
    """The envelope's attributes with its data in clear (``raw`` as parsed from JSON;
    left as it is)."""
    if SEALED not in raw:
        return raw
    raw = dict(raw)
    sealed = raw.pop(SEALED)
    if cipher is None or not isinstance(sealed, str):
        raise UnreadableBody("sealed data, and no key here to open it")
    try:
        raw["data"] = json.loads(cipher.decrypt(sealed, context=_context(raw.get("id"))))
    except DecryptionError:
        raise UnreadableBody("sealed data does not open (another key, or moved)") from None
    return raw
