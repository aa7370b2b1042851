"""Money in minor units, reference codes and the applicant's payment instructions (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

# ISO 4217 minor-unit exponents that are not 2 (the ones a program here could plausibly use).
_EXPONENTS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "JOD": 3}

# Crockford's base32: no I, L, O, U, so a code read out or typed by hand stays unambiguous.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TO_CROCKFORD = str.maketrans(_B32, _CROCKFORD)
REFERENCE_PREFIX = "HS"


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)


def format_amount(amount_minor: int, currency: str) -> str:
    """``90000, "CNY"`` -> ``"900.00 CNY"``."""
    exp = exponent(currency)
    value = Decimal(amount_minor).scaleb(-exp)
    return f"{value:.{exp}f} {currency.upper()}"


def major_to_minor(text: str, currency: str) -> int:
    """``"900.00"`` -> ``90000``; refuses anything that is not a plain, exact decimal amount."""
    if not re.fullmatch(r"\d{1,12}(\.\d{1,3})?", text or ""):
        raise ValueError("not a plain decimal amount")
    try:
        value = Decimal(text).scaleb(exponent(currency))
    except InvalidOperation:
        raise ValueError("not a decimal amount") from None
    if value != value.to_integral_value():
        raise ValueError("more decimals than the currency has")
    return int(value)


def reference_code(key: bytes, registration_id: str, attempt: int = 0) -> str:
    """A short human reference, derived from the registration so a redelivery gets the same one.

    ``HS-XXXX-XXXX``: 40 bits of a keyed hash (the key keeps codes unguessable from ids);
    ``attempt`` picks another code in the rare case of a collision.
    """
    digest = hmac.new(key, f"reference\x00{registration_id}\x00{attempt}".encode(), "sha256")
    code = base64.b32encode(digest.digest()[:5]).decode().translate(_TO_CROCKFORD)
    return f"{REFERENCE_PREFIX}-{code[:4]}-{code[4:8]}"


def compact_reference(text: str) -> str:
    """What a reference is looked up by: upper case, no spaces or dashes (as typed in a note)."""
    compact = re.sub(r"[\s\-_]", "", (text or "").upper())
    # Crockford's decoding of look-alikes, so a hand-typed O or I still finds the code.
    return compact.translate(str.maketrans("OIL", "011"))


def payment_id_for(registration_id: str) -> str:
    """One payment request per registration; its id is derived, so every replica agrees."""
    digest = hashlib.sha256(f"payment\x00{registration_id}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def instructions(
    *, amount_minor: int, currency: str, reference: str, expires_at: datetime, timezone: str
) -> str:
    """What the applicant is told. Only the amount due: never how it was arrived at."""
    due = expires_at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")
    return (
        f"Amount due: {format_amount(amount_minor, currency)}. "
        f"Reference: {reference}. "
        "Pay with WeChat Pay or Alipay using this reference, or by bank transfer with the "
        "reference in the transfer note. "
        f"Please pay by {due} ({timezone}); your place is held until then."
    )
