"""What every service's part of a person's data export shares (PIPL art. 45, GDPR art.
15 and 20): their data, opened, and the staff who acted on it unnamed."""

from __future__ import annotations

from typing import Any

STAFF = "coordinator"


def staff_unnamed(value: Any) -> Any:
    """``value`` with each staff account id (a ``by`` or ``*_by`` field) said as
    "coordinator": the export is the applicant's data, not a list of the staff."""
    if isinstance(value, list):
        return [staff_unnamed(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: _unnamed(k, v) for k, v in value.items()}


def _unnamed(key: str, value: Any) -> Any:
    if (key == "by" or key.endswith("_by")) and value not in (None, "applicant"):
        return STAFF
    return staff_unnamed(value)
