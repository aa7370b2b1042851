"""What payments tells the other services: the payloads of what a case decision emitted.

Pure: ``Case`` (domain/cases.py) says what happened in ``Emitted`` records; these become
typed events, which the service puts in envelopes and writes with the change.
"""

from __future__ import annotations

from payments.domain.cases import Case
from payments.domain.claims import Emitted
from payments.domain.money import instructions
from shared import events as ev


def event_payloads(case: Case, emitted: list[Emitted], *, timezone: str) -> list[ev.EventData]:
    """The events a decision on ``case`` emitted, as their typed payloads."""
    ids = {"registration_id": case.registration_id, "payment_id": case.payment_id}
    out: list[ev.EventData] = []
    for e in emitted:
        data: ev.EventData
        match e.kind:
            case "requested":
                assert case.amount_due and case.currency and case.reference
                assert case.expires_at is not None
                data = ev.PaymentRequested(
                    **ids,
                    amount=ev.Money(amount_minor=case.amount_due, currency=case.currency),
                    reference=case.reference,
                    expires_at=case.expires_at,
                    instructions=instructions(
                        amount_minor=case.amount_due,
                        currency=case.currency,
                        reference=case.reference,
                        expires_at=case.expires_at,
                        timezone=timezone,
                    ),
                    scholarship=_decided(case.scholarship_status),
                )
            case "confirmed":
                assert case.confirmed is not None and case.reference and e.method
                data = ev.PaymentConfirmed(
                    **ids,
                    amount=ev.Money(
                        amount_minor=case.confirmed["amount_minor"],
                        currency=case.confirmed["currency"],
                    ),
                    reference=case.reference,
                    method=e.method,
                    confirmed_at=case.confirmed["at"],
                )
            case "waived":
                data = ev.PaymentWaived(**ids)
            case "expired":
                data = ev.PaymentExpired(**ids)
            case "failed":
                data = ev.PaymentFailed(**ids, reason_code=e.reason_code or "failed")
            case "refund_due":
                assert case.refund is not None and e.reason_code
                amount = ev.Money(
                    amount_minor=case.refund["amount_minor"], currency=case.refund["currency"]
                )
                data = ev.PaymentRefundDue(**ids, amount=amount, reason_code=e.reason_code)
            case "confirmation_pending":
                assert e.confirmation_id and e.amount_minor is not None and e.currency
                data = ev.PaymentConfirmationPending(
                    **ids,
                    confirmation_id=e.confirmation_id,
                    amount=ev.Money(amount_minor=e.amount_minor, currency=e.currency),
                )
        out.append(data)
    return out


def _decided(status: str | None) -> str | None:
    return status if status in ("granted", "declined") else None
