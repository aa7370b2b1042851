"""What registration tells the other services: the event payloads of what happened.

Pure: the ledger's happenings (domain/ledger.py) become typed events; the service puts
them in envelopes and writes them with the change, in one conditional write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from registration.domain.composition import withdrawal_refundable
from registration.domain.ledger import Happened, Ledger, Status
from registration.domain.programs import Application, ProgramSpec
from shared import events as ev


def program_spec(doc: dict[str, Any]) -> ProgramSpec:
    """A stored program as its spec (the document also holds bookkeeping fields)."""
    return ProgramSpec.model_validate({k: doc[k] for k in ProgramSpec.model_fields if k in doc})


def contact_of(application: Application, access_token: str | None = None) -> ev.Contact:
    return ev.Contact(
        name=application.name,
        email=application.email,
        chat_handle=application.chat_handle,
        language=application.language,
        timezone=application.timezone,
        access_token=access_token,
    )


def stored_contact(
    doc: dict[str, Any], personal: dict[str, Any], access_token: str | None
) -> ev.Contact:
    """The contact of a stored registration (``personal``: its opened fields)."""
    return ev.Contact(
        name=personal["name"],
        email=personal["email"],
        chat_handle=personal.get("chat_handle"),
        language=doc["language"],
        timezone=doc["timezone"],
        access_token=access_token,
    )


def cohort_ref(cohort: dict[str, Any], program: ProgramSpec) -> ev.CohortRef:
    return ev.CohortRef(
        cohort_id=cohort["_id"],
        program_id=cohort["program_id"],
        display_name=program.display_name,
        sessions=[
            ev.Session(starts_at=s["starts_at"], ends_at=s["ends_at"], timezone=s["timezone"])
            for s in cohort["sessions"]
        ],
        sessions_sequence=cohort.get("sessions_sequence", 0),
        contact_email=program.contact_email,
    )


def verification_requested(
    rid: str,
    cohort: dict[str, Any],
    program: ProgramSpec,
    contact: ev.Contact,
    *,
    verify_by: datetime,
    already_registered: bool,
    flagged: bool,
) -> list[ev.EventData]:
    """A sign-up waiting for its email address: the link for notifications to send, or,
    for an address already registered, only word to its owner. A safety flag is raised
    now, verified or not: it must reach a person whatever the applicant does next."""
    out: list[ev.EventData] = [
        ev.RegistrationEmailVerificationRequested(
            registration_id=rid,
            cohort_id=cohort["_id"],
            program_id=cohort["program_id"],
            contact=contact,
            cohort=cohort_ref(cohort, program),
            verify_by=verify_by,
            already_registered=already_registered,
        )
    ]
    if flagged:
        out.append(safety_flag(rid, cohort["_id"], cohort["program_id"], program))
    return out


def safety_flag(
    rid: str, cohort_id: str, program_id: str, program: ProgramSpec
) -> ev.RegistrationFlaggedForSafety:
    """A person must look, and the applicant gets the program's crisis lines at once:
    for a safety answer at intake, or later in progress's questionnaires."""
    return ev.RegistrationFlaggedForSafety(
        registration_id=rid,
        cohort_id=cohort_id,
        program_id=program_id,
        crisis_resources=[ev.CrisisResource(**r.model_dump()) for r in program.crisis_resources],
    )


def signed_up(
    rid: str,
    cohort: dict[str, Any],
    program_id: str,
    program: ProgramSpec,
    contact: ev.Contact,
    *,
    scholarship_requested: bool,
    now: datetime,
) -> list[ev.EventData]:
    """A verified sign-up on the ledger: who to reach and how (for notifications), the
    price and whether a scholarship was asked (for payments)."""
    price = ev.Money(amount_minor=program.price.amount_minor, currency=program.price.currency)
    return [
        ev.RegistrationSubmitted(
            registration_id=rid,
            cohort_id=cohort["_id"],
            program_id=program_id,
            contact=contact,
            cohort=cohort_ref(cohort, program),
            price=price,
            scholarship_requested=scholarship_requested,
            submitted_at=now,
        )
    ]


def event_payloads(
    happened: list[Happened],
    cohort: dict[str, Any],
    program_id: str,
    program: ProgramSpec,
    ledger: Ledger,
    now: datetime,
) -> list[ev.EventData]:
    """The events the ledger's happenings cause, in order."""
    return [
        data for h in happened for data in _payloads(h, cohort, program_id, program, ledger, now)
    ]


def _payloads(
    h: Happened,
    cohort: dict[str, Any],
    pid: str,
    program: ProgramSpec,
    ledger: Ledger,
    now: datetime,
) -> list[ev.EventData]:
    cid = cohort["_id"]
    common = {"registration_id": h.registration_id, "cohort_id": cid}
    entry = ledger.entries[h.registration_id]
    ended: list[ev.EventData]
    match h.kind:
        case "pending_review":
            return [ev.RegistrationPendingReview(**common, hold_expires_at=h.expires_at)]
        case "approved":
            return [
                ev.RegistrationApproved(
                    **common,
                    program_id=pid,
                    consent_form_ref=program.consent_form_ref,
                    price=ev.Money(amount_minor=entry.price_minor, currency=entry.currency),
                    refundable=program.refundable,
                    hold_expires_at=entry.expires_at,
                )
            ]
        case "waitlisted":
            return [
                ev.RegistrationWaitlisted(**common, position=h.position),
                ev.EnrollmentWaitlisted(
                    **common, program_id=pid, occurred_at=now, position=h.position
                ),
            ]
        case "seat_offered":
            return [ev.RegistrationSeatOffered(**common, offer_expires_at=h.expires_at)]
        case "rejected":
            return [ev.RegistrationRejected(**common)]
        case "withdrawn" | "cancelled":
            ended = [_withdrawn(h, cohort, program, now)]
        case "expired":
            ended = [ev.RegistrationExpired(**common, previous_status=str(h.previous))]
        case "confirmed":
            return [ev.EnrollmentConfirmed(**common, program_id=pid, occurred_at=now)]
        case "paid_after_close":
            return [ev.RegistrationPaidAfterClose(**common, previous_status=str(h.previous))]
        case _:  # awaiting_payment: consent.signed already says so; payments acts on it
            return []
    if h.previous == Status.confirmed:
        ended.append(ev.EnrollmentCancelled(**common, program_id=pid, occurred_at=now))
    return ended


def _withdrawn(
    h: Happened, cohort: dict[str, Any], program: ProgramSpec, now: datetime
) -> ev.RegistrationWithdrawn:
    """Withdrawn by the applicant, or because the coordinator cancelled the cohort: the
    refund is the program's for that case."""
    cancelled = h.kind == "cancelled"
    refundable = (
        program.cancellation_refundable
        if cancelled
        else withdrawal_refundable(cohort, program, h.registration_id, now)
    )
    return ev.RegistrationWithdrawn(
        registration_id=h.registration_id,
        cohort_id=cohort["_id"],
        previous_status=str(h.previous),
        refundable=refundable,
        cohort_cancelled=cancelled,
    )


def moved(
    rid: str,
    status: Status,
    source: dict[str, Any],
    target: dict[str, Any],
    program_id: str,
    program: ProgramSpec,
    now: datetime,
) -> list[ev.EventData]:
    """A registration moved from ``source`` to ``target`` with its ``status``: word for
    notifications (the person), and, for a confirmed place, the public enrollment ended
    in one cohort and begun in the other (registration/moves.py)."""
    ledger = Ledger.from_doc(target)
    out: list[ev.EventData] = [
        ev.RegistrationMoved(
            registration_id=rid,
            cohort_id=target["_id"],
            from_cohort_id=source["_id"],
            program_id=program_id,
            status=str(status),
            position=ledger.position(rid),
            cohort=cohort_ref(target, program),
        )
    ]
    if status == Status.confirmed:
        ids = {"registration_id": rid, "program_id": program_id, "occurred_at": now}
        out += [
            ev.EnrollmentCancelled(**ids, cohort_id=source["_id"]),
            ev.EnrollmentConfirmed(**ids, cohort_id=target["_id"]),
        ]
    return out
