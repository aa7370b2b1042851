"""The payment case state machine, money and references (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from payments.domain.cases import Case, Status, default_expiry
from payments.domain.claims import CaseError, Claim, FlagKind, SelfApproval
from payments.domain.money import (
    compact_reference,
    format_amount,
    instructions,
    major_to_minor,
    payment_id_for,
    reference_code,
)

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
REF = "HS-ABCD-EF12"


def case() -> Case:
    return Case(registration_id="r-1", payment_id=payment_id_for("r-1"))


def requested(price: int = 90000, currency: str = "CNY", refundable: bool = False) -> Case:
    c = case()
    emitted = c.consent_signed(
        price_minor=price,
        currency=currency,
        refundable=refundable,
        expires_at=NOW + timedelta(hours=1),
        reference=REF,
        now=NOW,
    )
    assert [e.kind for e in emitted] == ["requested"]
    return c


def claim(key: str = "wechatpay:t1", amount: int = 90000, **kw) -> Claim:
    return Claim(
        kw.pop("method", "wechatpay"),
        key,
        kw.pop("reference", REF),
        amount,
        kw.pop("cur", "CNY"),
        **kw,
    )


# --- requests -------------------------------------------------------------------------


def test_consent_signed_issues_a_request_for_the_price() -> None:
    c = requested()
    assert (c.status, c.amount_due, c.currency, c.reference) == ("requested", 90000, "CNY", REF)


def test_a_price_of_zero_or_none_is_waived() -> None:
    for price in (0, None):
        c = case()
        emitted = c.consent_signed(
            price_minor=price,
            currency="CNY",
            refundable=False,
            expires_at=NOW,
            reference=REF,
            now=NOW,
        )
        assert [e.kind for e in emitted] == ["waived"]
        assert c.status == Status.waived


def test_a_second_consent_changes_nothing() -> None:
    c = requested()
    again = c.consent_signed(
        price_minor=1, currency="USD", refundable=True, expires_at=NOW, reference="X", now=NOW
    )
    assert again == [] and (c.amount_due, c.reference) == (90000, REF)


def test_default_expiry_follows_the_hold() -> None:
    hold = NOW + timedelta(minutes=30)
    assert default_expiry(NOW, hold, 3600) == hold
    assert default_expiry(NOW, None, 3600) == NOW + timedelta(hours=1)


# --- scholarships ------------------------------------------------------------------------


def scholarship_case() -> Case:
    c = case()
    c.scholarship_requested(cohort_id="c-1", price_minor=15000, currency="CNY", now=NOW)
    emitted = c.consent_signed(
        price_minor=15000,
        currency="CNY",
        refundable=False,
        expires_at=NOW + timedelta(hours=1),
        reference=REF,
        now=NOW,
    )
    assert emitted == [] and c.status == Status.pending_decision
    return c


def test_a_reduced_grant_issues_the_request_for_the_amount_due() -> None:
    c = scholarship_case()
    assert c.check_grantable(5000) == 10000
    emitted = c.grant(amount_due_minor=5000, by="coord-a", now=NOW)
    assert [e.kind for e in emitted] == ["requested"]
    assert (c.status, c.amount_due) == (Status.requested, 5000)


def test_a_scholarship_decision_keeps_who_when_and_why_and_survives_the_document() -> None:
    granted = scholarship_case()
    granted.grant(amount_due_minor=5000, by="coord-a", now=NOW, why="sealed-why")
    declined = scholarship_case()
    declined.decline(by="coord-b", now=NOW)
    assert {k: granted.scholarship[k] for k in ("decided_by", "decided_at", "why")} == {
        "decided_by": "coord-a",
        "decided_at": NOW,
        "why": "sealed-why",
    }
    assert declined.scholarship["why"] is None
    assert Case.from_doc(granted.to_doc()).scholarship == granted.scholarship


def test_a_full_grant_waives_and_a_decline_asks_for_the_price() -> None:
    waived = scholarship_case()
    assert [e.kind for e in waived.grant(amount_due_minor=0, by="a", now=NOW)] == ["waived"]
    declined = scholarship_case()
    assert [e.kind for e in declined.decline(by="a", now=NOW)] == ["requested"]
    assert declined.amount_due == 15000


def test_a_grant_needs_an_undecided_request_and_a_lower_amount() -> None:
    c = scholarship_case()
    with pytest.raises(CaseError):
        c.grant(amount_due_minor=15000, by="a", now=NOW)  # not a reduction
    c.grant(amount_due_minor=0, by="a", now=NOW)
    with pytest.raises(CaseError):
        c.grant(amount_due_minor=100, by="a", now=NOW)  # already decided
    with pytest.raises(CaseError):
        requested().grant(amount_due_minor=100, by="a", now=NOW)  # never requested


def test_a_grant_after_the_request_reissues_it_with_the_new_amount() -> None:
    c = requested(price=15000)
    c.scholarship_requested(cohort_id="c-1", price_minor=15000, currency="CNY", now=NOW)
    assert [e.kind for e in c.grant(amount_due_minor=7000, by="a", now=NOW)] == ["requested"]
    assert (c.amount_due, c.reference) == (7000, REF)


# --- settling ---------------------------------------------------------------------------


def test_a_matching_claim_confirms_once_and_repeats_are_duplicates() -> None:
    c = requested()
    assert c.settle(claim(), NOW).outcome == "confirmed"
    assert c.status == Status.confirmed and c.confirmed["method"] == "wechatpay"
    for _ in range(3):
        assert c.settle(claim(), NOW).outcome == "duplicate"
    assert len(c.claims) == 1


def test_a_second_payment_after_confirmation_is_flagged_not_confirmed_again() -> None:
    c = requested()
    c.settle(claim("wechatpay:t1"), NOW)
    second = c.settle(claim("alipay:t2", method="alipay"), NOW)
    assert (second.outcome, second.flag) == ("flagged", FlagKind.already_paid)
    assert c.confirmed["claim_key"] == "wechatpay:t1"


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({"amount": 89999}, FlagKind.amount_mismatch),
        ({"cur": "USD"}, FlagKind.currency_mismatch),
        ({"reference": "HS-ZZZZ-ZZZZ"}, FlagKind.unknown_reference),
        ({"merchant_ok": False}, FlagKind.merchant_mismatch),
    ],
)
def test_mismatches_are_flagged_and_leave_the_request_open(kwargs, kind) -> None:
    c = requested()
    settled = c.settle(claim(**kwargs), NOW)
    assert (settled.outcome, settled.flag) == ("flagged", kind)
    assert settled.flag_id and c.status == Status.requested and c.confirmed is None
    repeat = c.settle(claim(**kwargs), NOW)
    assert (repeat.outcome, repeat.flag, repeat.flag_id) == ("duplicate", kind, settled.flag_id)


def test_money_for_a_closed_or_unissued_request_is_flagged() -> None:
    c = requested()
    c.expire_due(NOW + timedelta(hours=2))
    assert c.settle(claim(), NOW).flag == FlagKind.request_closed
    early = case()
    assert early.settle(claim(), NOW).flag == FlagKind.not_requested


def test_a_reference_is_matched_as_typed() -> None:
    c = requested()
    assert c.settle(claim(reference=" hs abcd ef12 "), NOW).outcome == "confirmed"


# --- maker-checker ------------------------------------------------------------------------


def test_the_maker_cannot_approve_their_own_confirmation() -> None:
    c = requested()
    assert (
        c.mark_manual(
            confirmation_id="m1",
            by="coord-a",
            reference=REF,
            amount_minor=90000,
            currency="CNY",
            evidence=None,
            now=NOW,
        )
        is None
    )
    before = c.to_doc()
    with pytest.raises(SelfApproval):
        c.approve_manual(confirmation_id="m1", by="coord-a", now=NOW)
    assert c.to_doc() == before
    assert c.approve_manual(confirmation_id="m1", by="coord-b", now=NOW).outcome == "confirmed"
    assert c.confirmed["method"] == "manual"
    assert c.manual_confirmation("m1")["status"] == "approved"
    assert c.approve_manual(confirmation_id="m1", by="coord-b", now=NOW).outcome == "duplicate"


def test_a_mismatching_transfer_is_flagged_and_nothing_waits_for_approval() -> None:
    c = requested()
    flagged = c.mark_manual(
        confirmation_id="m1",
        by="a",
        reference=REF,
        amount_minor=45000,
        currency="CNY",
        evidence=None,
        now=NOW,
    )
    assert flagged is not None and flagged.flag == FlagKind.amount_mismatch
    assert not c.pending_manual and c.status == Status.requested
    again = c.mark_manual(
        confirmation_id="m1",
        by="a",
        reference=REF,
        amount_minor=45000,
        currency="CNY",
        evidence=None,
        now=NOW,
    )
    assert again == flagged and len(c.claims) == 1  # a retried mark is the same flag


def test_one_pending_manual_confirmation_at_a_time_and_rejection() -> None:
    c = requested()
    mark = {"reference": REF, "amount_minor": 90000, "currency": "CNY", "evidence": None}
    c.mark_manual(confirmation_id="m1", by="a", now=NOW, **mark)
    with pytest.raises(CaseError):
        c.mark_manual(confirmation_id="m2", by="a", now=NOW, **mark)
    c.reject_manual(confirmation_id="m1", by="b", now=NOW)
    assert not c.pending_manual and c.status == Status.requested
    with pytest.raises(CaseError):
        c.approve_manual(confirmation_id="m1", by="b", now=NOW)


# --- endings --------------------------------------------------------------------------


def test_withdrawal_cancels_an_open_request_and_a_late_consent_creates_nothing() -> None:
    c = requested()
    assert c.withdrawn(refundable=False, now=NOW) == [] and c.status == Status.cancelled
    early = case()
    early.withdrawn(refundable=False, now=NOW)
    assert (
        early.consent_signed(
            price_minor=100,
            currency="CNY",
            refundable=False,
            expires_at=NOW,
            reference=REF,
            now=NOW,
        )
        == []
    )
    assert early.status == Status.cancelled


def test_withdrawal_after_payment_follows_the_refund_policy() -> None:
    no_refund = requested()
    no_refund.settle(claim(), NOW)
    no_refund.withdrawn(refundable=False, now=NOW)
    assert no_refund.refund["status"] == "none" and no_refund.refund["amount_minor"] == 0
    assert no_refund.status == Status.confirmed
    with pytest.raises(CaseError):
        no_refund.refund_made(by="a", now=NOW)

    refundable = requested(refundable=True)
    refundable.settle(claim(), NOW)
    refundable.withdrawn(refundable=False, now=NOW)  # the program's policy was recorded
    assert refundable.refund["status"] == "to_be_made"
    assert refundable.refund["amount_minor"] == 90000
    refundable.refund_made(by="a", now=NOW)
    assert refundable.refund["status"] == "made"
    assert refundable.to_doc()["refund_status"] == "made"


def test_expiry_only_when_due_and_only_once() -> None:
    c = requested()
    assert c.expire_due(NOW) == []
    assert [e.kind for e in c.expire_due(NOW + timedelta(hours=1))] == ["expired"]
    assert c.expire_due(NOW + timedelta(hours=2)) == []
    assert c.registration_expired(NOW) == []


def test_registration_expiry_expires_a_request() -> None:
    c = requested()
    assert [e.kind for e in c.registration_expired(NOW)] == ["expired"]


def test_fail_only_from_requested() -> None:
    c = requested()
    assert [e.reason_code for e in c.fail(reason_code="refunded", by="a", now=NOW)] == ["refunded"]
    with pytest.raises(CaseError):
        c.fail(reason_code="x", by="a", now=NOW)


def test_a_document_taken_before_a_change_does_not_change_with_it() -> None:
    c = requested()
    before = c.to_doc()
    c.settle(claim(amount=1), NOW)
    c.mark_manual(
        confirmation_id="m1",
        by="a",
        reference=REF,
        amount_minor=90000,
        currency="CNY",
        evidence=None,
        now=NOW,
    )
    assert before["claims"] == [] and before["manual"] == []
    assert len(c.to_doc()["claims"]) == 1 and len(c.to_doc()["manual"]) == 1


def test_documents_round_trip() -> None:
    c = scholarship_case()
    c.grant(amount_due_minor=5000, by="a", now=NOW)
    c.settle(claim(amount=5000), NOW)
    doc = c.to_doc()
    assert Case.from_doc(doc).to_doc() == doc
    assert doc["scholarship_status"] == "granted" and doc["status"] == "confirmed"


# --- money and references -----------------------------------------------------------------


def test_amounts() -> None:
    assert format_amount(90000, "CNY") == "900.00 CNY"
    assert format_amount(500, "JPY") == "500 JPY"
    assert major_to_minor("900.00", "CNY") == 90000
    assert major_to_minor("0.01", "CNY") == 1
    for bad in ("9.001", "-1", "1e3", "", " 1", "abc", "1.2.3"):
        with pytest.raises(ValueError):
            major_to_minor(bad, "CNY")


def test_reference_codes_are_stable_short_and_keyed() -> None:
    key = b"k" * 32
    code = reference_code(key, "r-1")
    assert code == reference_code(key, "r-1")
    assert code != reference_code(key, "r-1", attempt=1)
    assert code != reference_code(b"j" * 32, "r-1")
    assert len(code) == 12 and code.startswith("HS-")
    assert not set(code[3:].replace("-", "")) & set("ILOU")
    assert compact_reference(code.lower().replace("-", " ")) == compact_reference(code)


def test_instructions_show_only_the_amount_due() -> None:
    c = scholarship_case()
    c.grant(amount_due_minor=5000, by="a", now=NOW)
    text = instructions(
        amount_minor=c.amount_due,
        currency="CNY",
        reference=REF,
        expires_at=NOW,
        timezone="Asia/Shanghai",
    )
    assert "50.00 CNY" in text and REF in text and "2025-05-01 20:00" in text
    assert "scholarship" not in text.lower() and "150.00" not in text


@pytest.mark.parametrize("decision", ["granted", "declined", None])
def test_the_payment_request_carries_the_scholarship_decision_and_nothing_else(decision) -> None:
    from payments.domain.events import event_payloads

    from shared import events as ev

    c = case()
    if decision is not None:
        c.scholarship_requested(cohort_id="c-1", price_minor=90000, currency="CNY", now=NOW)
    waiting = c.consent_signed(
        price_minor=90000,
        currency="CNY",
        refundable=False,
        expires_at=NOW + timedelta(hours=1),
        reference=REF,
        now=NOW,
    )
    if decision == "granted":
        emitted = c.grant(amount_due_minor=30000, by="ana@example.org", now=NOW)
    elif decision == "declined":
        emitted = c.decline(by="ana@example.org", now=NOW)
    else:
        emitted = waiting
    (request,) = event_payloads(c, emitted, timezone="Asia/Shanghai")
    assert isinstance(request, ev.PaymentRequested) and request.scholarship == decision
    assert request.amount.amount_minor == (30000 if decision == "granted" else 90000)
    assert "ana@example.org" not in request.model_dump_json()  # not who decided


# --- money after the end ------------------------------------------------------------------


def test_money_past_the_requests_expiry_is_flagged_even_before_the_expiry_ran() -> None:
    c = requested()  # expires at NOW + 1 h; payments' own expiry has not run yet
    settled = c.settle(claim(), NOW + timedelta(hours=1, seconds=1))
    assert (settled.outcome, settled.flag) == ("flagged", FlagKind.request_closed)
    assert c.status == Status.requested and c.confirmed is None
    assert c.settle(claim("wechatpay:t2"), NOW).outcome == "confirmed"  # in time: taken


def test_money_confirmed_for_an_ended_registration_becomes_a_refund_to_make_once() -> None:
    c = requested(refundable=False)
    assert c.settle(claim(), NOW).outcome == "confirmed"
    (owed,) = c.paid_after_close(NOW)
    assert (owed.kind, owed.reason_code) == ("refund_due", "registration_closed")
    assert c.refund is not None
    assert (c.refund["status"], c.refund["amount_minor"]) == ("to_be_made", 90000)
    assert c.paid_after_close(NOW) == []  # told again: still one refund
    c.refund_made(by="coord-1", now=NOW)
    assert c.paid_after_close(NOW) == [] and c.refund["status"] == "made"


def test_a_refundable_withdrawal_after_payment_announces_the_refund() -> None:
    c = requested(refundable=True)
    c.settle(claim(), NOW)
    (owed,) = c.withdrawn(refundable=False, now=NOW)
    assert (owed.kind, owed.reason_code) == ("refund_due", "withdrawn")
    kept = requested(refundable=False)
    kept.settle(claim(), NOW)
    assert kept.withdrawn(refundable=False, now=NOW) == []
    assert kept.refund is not None and kept.refund["status"] == "none"


# Matrix row 19: a provider notifies each payment at least once, late and in any order,
# and may repeat any notification for up to 3 days. Whatever the order: the payment
# whose notification first arrives before the request expires confirms it (the seat is
# only held until then), every other payment is flagged as money to give back, a repeat
# is a duplicate with the outcome of the first, and a confirmation is never undone.
MINUTES_3_DAYS = 3 * 24 * 60


@settings(max_examples=300, deadline=None, database=None)
@given(
    paid_at=st.lists(st.integers(0, MINUTES_3_DAYS), min_size=1, max_size=3),
    late_by=st.lists(st.integers(0, 24 * 60), min_size=3, max_size=3),
    repeats=st.lists(st.tuples(st.integers(0, 2), st.integers(0, MINUTES_3_DAYS)), max_size=12),
    expiry_runs=st.lists(st.integers(0, MINUTES_3_DAYS), max_size=4),
)
def test_notifications_in_any_order_repeated_over_three_days_end_as_the_provider_says(
    paid_at: list[int], late_by: list[int], repeats: list[tuple[int, int]], expiry_runs: list[int]
) -> None:
    c = case()
    expires_at = NOW + timedelta(days=1)
    c.consent_signed(
        price_minor=90000,
        currency="CNY",
        refundable=True,
        expires_at=expires_at,
        reference=REF,
        now=NOW,
    )
    keys = [f"wechatpay:tx{i}" for i in range(len(paid_at))]
    notified = [minute + late_by[i] for i, minute in enumerate(paid_at)]
    arrivals = [(minute, 0, i) for i, minute in enumerate(notified)]
    arrivals += [(notified[i % len(keys)] + delay, 1, i % len(keys)) for i, delay in repeats]
    arrivals += [(minute, 2, -1) for minute in expiry_runs]
    first_outcome: dict[str, tuple[str, FlagKind | None]] = {}
    confirmed_key = None
    for minute, kind, i in sorted(arrivals):
        now = NOW + timedelta(minutes=minute)
        if kind == 2:
            c.expire_due(now)
        else:
            settled = c.settle(claim(keys[i]), now)
            if keys[i] not in first_outcome:
                first_outcome[keys[i]] = (settled.outcome, settled.flag)
            else:
                assert settled.outcome == "duplicate", settled
                assert settled.flag == first_outcome[keys[i]][1], settled
        if confirmed_key is not None:  # never undone, never replaced
            assert c.status == Status.confirmed and c.confirmed["claim_key"] == confirmed_key
        elif c.status == Status.confirmed:
            confirmed_key = c.confirmed["claim_key"]

    in_time = sorted(
        (m, keys[i]) for i, m in enumerate(notified) if NOW + timedelta(minutes=m) < expires_at
    )
    if in_time:
        first = in_time[0][1]
        assert confirmed_key == first and first_outcome[first] == ("confirmed", None)
    else:
        assert confirmed_key is None
    assert sorted(entry["key"] for entry in c.claims) == sorted(keys), "each payment once"
    for key in keys:
        if key != confirmed_key:
            outcome, flag = first_outcome[key]
            assert outcome == "flagged" and flag in (FlagKind.already_paid, FlagKind.request_closed)
