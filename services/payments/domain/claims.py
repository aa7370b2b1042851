"""What a payment case is told and what it tells: claims that money arrived, how a
claim was settled, the flags for coordinators, the events a decision emits, and the
refusals (pure value types; the case itself is domain/cases.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from shared.errors import Conflict, Forbidden

Method = Literal["wechatpay", "alipay", "generic", "manual"]


class Status(StrEnum):
    """Where a payment case stands (the case is domain/cases.py)."""

    open = "open"
    pending_decision = "pending_decision"
    requested = "requested"
    confirmed = "confirmed"
    waived = "waived"
    expired = "expired"
    failed = "failed"
    cancelled = "cancelled"


class FlagKind(StrEnum):
    unknown_reference = "unknown_reference"
    amount_mismatch = "amount_mismatch"
    currency_mismatch = "currency_mismatch"
    merchant_mismatch = "merchant_mismatch"
    not_requested = "not_requested"  # money for a request not issued yet
    request_closed = "request_closed"  # expired, cancelled, failed or waived: money to return
    already_paid = "already_paid"  # a second, different payment: money to return


class CaseError(Conflict):
    """A change the current state does not allow."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class SelfApproval(Forbidden):
    """The maker of a manual confirmation tried to approve it too."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


@dataclass(frozen=True)
class Claim:
    """Someone says money arrived. ``key`` identifies the payment itself."""

    method: Method
    key: str  # "wechatpay:<transaction_id>", "manual:<confirmation id>", ...
    reference: str
    amount_minor: int
    currency: str
    merchant_ok: bool = True


def flag_id(claim_key: str, kind: str) -> str:
    """Deterministic, so the same claim flagged twice is one flag."""
    return hashlib.sha256(f"{claim_key}\x00{kind}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Settled:
    outcome: Literal["confirmed", "duplicate", "flagged"]
    flag: FlagKind | None = None
    flag_id: str | None = None


@dataclass(frozen=True)
class Emitted:
    """An event the change causes; the service turns it into an envelope."""

    kind: Literal[
        "requested",
        "confirmed",
        "waived",
        "expired",
        "failed",
        "confirmation_pending",
        "refund_due",
    ]
    method: Method | None = None
    reason_code: str | None = None
    confirmation_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
