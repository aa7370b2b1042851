"""Notifications' pure rules: quiet hours, retries, reminders, plans, templates, .ics, settings."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import aiosmtplib
import pytest
from icalendar import Calendar
from notifications.channels import chat_payload, classify_smtp
from notifications.domain import reminders as rem
from notifications.domain.delivery import (
    DeliveryFailure,
    Status,
    after_failure,
    delivery_id,
    may_attempt,
    retry_delay,
)
from notifications.domain.plan import (
    APPLICANT_TEMPLATES,
    TEMPLATES,
    Audience,
    plan,
    still_wanted,
)
from notifications.domain.quiet import QuietHours, send_at
from notifications.handlers import subscriptions
from notifications.rendering import Renderer, money, when
from notifications.settings import NotificationsSettings
from pydantic import ValidationError

from shared.ics import build_ics, calendar_joining, left_group

NIGHT = QuietHours.parse("22:00", "08:00")
SH = "Asia/Shanghai"


def sh(y, m, d, hh, mm=0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=ZoneInfo(SH)).astimezone(UTC)


# --- quiet hours ---------------------------------------------------------------------


def test_quiet_hours_wrap_midnight_and_equal_bounds_mean_none() -> None:
    assert NIGHT.contains(time(23, 0)) and NIGHT.contains(time(3, 0))
    assert not NIGHT.contains(time(8, 0)) and not NIGHT.contains(time(21, 59))
    day = QuietHours.parse("12:00", "14:00")
    assert day.contains(time(12, 30)) and not day.contains(time(14, 0))
    assert not QuietHours.parse("22:00", "22:00").contains(time(23, 0))


def test_news_at_night_waits_until_the_morning_in_the_recipients_zone() -> None:
    late_evening = sh(2026, 6, 3, 23, 15)
    assert send_at(late_evening, SH, NIGHT, urgent=False) == sh(2026, 6, 4, 8, 0)
    small_hours = sh(2026, 6, 4, 2, 0)
    assert send_at(small_hours, SH, NIGHT, urgent=False) == sh(2026, 6, 4, 8, 0)
    afternoon = sh(2026, 6, 4, 15, 0)
    assert send_at(afternoon, SH, NIGHT, urgent=False) == afternoon
    # the same instant is daytime in London: no wait
    assert send_at(late_evening, "Europe/London", NIGHT, urgent=False) == late_evening


def test_urgent_messages_and_deadlines_override_quiet_hours() -> None:
    night = sh(2026, 6, 3, 23, 15)
    assert send_at(night, SH, NIGHT, urgent=True) == night
    offer_ends = sh(2026, 6, 4, 7, 0)
    assert send_at(night, SH, NIGHT, urgent=False, deadline=offer_ends) == night
    assert send_at(night, "No/Such_Zone", NIGHT, urgent=False) == night  # UTC 15:15: awake


def test_quiet_hours_follow_daylight_saving_time() -> None:
    # 8 March 2026: New York springs forward; 08:00 local is 12:00 UTC, not 13:00
    at_night = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # 01:00 EST
    assert send_at(at_night, "America/New_York", NIGHT, urgent=False) == datetime(
        2026, 3, 8, 12, 0, tzinfo=UTC
    )


# --- deliveries ------------------------------------------------------------------------


def test_delivery_ids_are_stable_and_distinct_per_event_template_and_recipient() -> None:
    a = delivery_id("e1", "approved", "r1")
    assert a == delivery_id("e1", "approved", "r1") and len(a) == 32
    assert len({a, delivery_id("e2", "approved", "r1"), delivery_id("e1", "x", "r1")}) == 3
    assert delivery_id("e1", "approved", "r2") != a


def test_temporary_failures_back_off_and_permanent_ones_stop() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    temp = DeliveryFailure("smtp_451", temporary=True)
    perm = DeliveryFailure("smtp_550", temporary=False)
    kw = {"max_attempts": 4, "now": now, "base_s": 30, "max_s": 100}
    assert [retry_delay(n, 30, 100) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]
    retry = after_failure(temp, attempts=2, **kw)
    assert (retry.status, retry.due_at) == (Status.pending, now + timedelta(seconds=60))
    assert after_failure(temp, attempts=4, **kw).status is Status.failed
    assert after_failure(perm, attempts=1, **kw).status is Status.failed
    soon = now + timedelta(seconds=10)
    assert after_failure(temp, attempts=1, expires_at=soon, **kw).status is Status.failed


def test_an_interrupted_attempt_is_due_again_only_after_its_claim() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert may_attempt("pending", now, now)
    assert may_attempt("sending", now - timedelta(seconds=1), now)
    assert not may_attempt("sending", now + timedelta(seconds=60), now)
    assert not may_attempt("sent", None, now) and not may_attempt("failed", None, now)


def test_smtp_errors_are_classified_by_reply_code() -> None:
    assert classify_smtp(aiosmtplib.SMTPResponseException(451, "later")).temporary
    refused = classify_smtp(
        aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(550, "no", "x@example.org")]
        )
    )
    assert (refused.code, refused.temporary) == ("smtp_550", False)
    assert "x@example.org" not in str(refused)
    assert classify_smtp(ConnectionRefusedError()).code == "smtp_unreachable"
    assert classify_smtp(TimeoutError()).temporary


def test_chat_payload_shapes() -> None:
    assert chat_payload("wecom", "hi") == {"msgtype": "text", "text": {"content": "hi"}}
    assert chat_payload("feishu", "hi") == {"msg_type": "text", "content": {"text": "hi"}}
    assert chat_payload("slack", "hi") == {"text": "hi"}


# --- what each event causes ---------------------------------------------------------


def test_every_subscribed_event_has_a_purpose() -> None:
    erasing = {"registration.erasure_requested"}  # erasure.erase: it sends nothing
    shaping = {"progress.plan_set"}  # what the next reminders say; nothing of its own
    for event_type in set(subscriptions.event_types) - erasing - shaping:
        assert plan(event_type, {}), event_type
    assert plan("registration.erasure_requested", {}) == []
    assert plan("payment.confirmed", {}) == []
    assert plan("progress.plan_set", {}) == []


def test_safety_flag_sends_crisis_resources_and_alerts_coordinators_urgently() -> None:
    planned = plan("registration.flagged_for_safety", {})
    assert [(p.template, p.audience, p.urgent) for p in planned] == [
        ("crisis_resources", Audience.applicant, True),
        ("coordinator_safety", Audience.coordinators, True),
    ]
    assert not any(p.urgent for p in plan("registration.submitted", {}))
    offer = plan("registration.seat_offered", {"offer_expires_at": "2026-06-04T07:00:00+00:00"})
    assert offer[0].deadline == datetime(2026, 6, 4, 7, tzinfo=UTC)
    # News nobody asked for just now; pointless once the window to withdraw has ended.
    unmet = plan("registration.composition_unmet", {"withdraw_by": "2026-06-04T07:00:00+00:00"})
    assert [(p.template, p.unprompted, p.deadline) for p in unmet] == [
        ("composition_unmet", True, datetime(2026, 6, 4, 7, tzinfo=UTC))
    ]
    assert plan("enrollment.confirmed", {})[0].calendar


def test_a_cancelled_cohort_and_changed_sessions_are_told_at_once() -> None:
    (own,) = plan("registration.withdrawn", {"refundable": True})
    assert own.template == "withdrawn"
    (cancelled,) = plan("registration.withdrawn", {"cohort_cancelled": True, "refundable": True})
    assert cancelled.template == "cohort_cancelled"
    assert not cancelled.unprompted  # the coordinator just did it: no quiet-hours wait
    (changed,) = plan("cohort.sessions_changed", {"sequence": 1})
    assert changed.template == "sessions_changed" and changed.calendar
    assert not changed.unprompted
    assert still_wanted("cohort_cancelled", "closed")


def test_closed_registrations_only_get_closing_messages_and_reminders_need_enrolment() -> None:
    assert still_wanted("withdrawn", "closed") and still_wanted("crisis_resources", "closed")
    assert not still_wanted("payment_requested", "closed")
    assert not still_wanted("reminder", "closed") and not still_wanted("reminder", "open")
    assert still_wanted("reminder", "confirmed") and still_wanted("approved", "open")


# --- reminders ---------------------------------------------------------------------------


def sessions(*starts: datetime) -> list[dict]:
    return [{"starts_at": s, "ends_at": s + timedelta(hours=1), "timezone": SH} for s in starts]


def test_reminders_are_scheduled_per_session_and_offset_and_keep_their_state() -> None:
    s1, s2 = sh(2026, 6, 3, 19, 30), sh(2026, 6, 10, 19, 30)
    schedule = rem.schedule(sessions(s2, s1), (3600, 86400), [])
    assert [(r.starts_at, r.offset_s) for r in schedule] == [
        (s1, 86400),
        (s1, 3600),
        (s2, 86400),
        (s2, 3600),
    ]
    assert schedule[1].due_at == s1 - timedelta(hours=1)
    done = rem.mark(schedule, {schedule[0].id: "fired"})
    again = rem.schedule(sessions(s1, s2), (86400, 3600), [r.to_doc() for r in done])
    assert [r.state for r in again] == ["fired", "pending", "pending", "pending"]
    assert rem.next_due(again) == schedule[1].due_at
    assert rem.parse_offsets("3600, 86400,3600") == (86400, 3600)
    with pytest.raises(ValueError):
        rem.parse_offsets("0")


def test_a_reminder_later_than_its_window_is_dropped_not_sent() -> None:
    start = sh(2026, 6, 3, 19, 30)
    day_before, hour_before = rem.schedule(sessions(start), (86400, 3600), [])
    on_time = hour_before.due_at + timedelta(minutes=5)
    fire, drop = rem.split_due([day_before, hour_before], on_time, window_s=900)
    assert (fire, drop) == ([hour_before], [day_before])
    fire, drop = rem.split_due([hour_before], start - timedelta(minutes=30), window_s=900)
    assert (fire, drop) == ([], [hour_before])
    assert rem.split_due([hour_before], hour_before.due_at - timedelta(seconds=1), 900) == ([], [])
    assert rem.expires_at(hour_before, 900) == hour_before.due_at + timedelta(minutes=15)
    assert rem.next_due(rem.mark([hour_before], {hour_before.id: "fired"})) is None


# --- calendar --------------------------------------------------------------------------


def test_ics_has_one_event_per_session_in_its_own_time_zone() -> None:
    starts = [sh(2026, 6, 3, 19, 30), sh(2026, 6, 10, 19, 30)]
    data = build_ics(uid_prefix="c1", summary="Thursday circle", sessions=sessions(*starts))
    cal = Calendar.from_ical(data)
    events = cal.walk("VEVENT")
    assert [e.decoded("dtstart") for e in events] == starts
    assert all(e["dtstart"].params["TZID"] == SH for e in events)
    assert [e.decoded("dtstart").hour for e in events] == [19, 19]
    assert len({str(e["uid"]) for e in events}) == 2
    assert [str(t["tzid"]) for t in cal.walk("VTIMEZONE")] == [SH]


def test_a_changed_schedule_keeps_each_slots_uid_with_a_higher_sequence() -> None:
    first = sessions(sh(2026, 6, 3, 19, 30), sh(2026, 6, 10, 19, 30), sh(2026, 6, 17, 19, 30))
    before = Calendar.from_ical(build_ics(uid_prefix="c1", summary="Circle", sessions=first))
    moved = sessions(sh(2026, 6, 4, 20), sh(2026, 6, 11, 20))
    after = Calendar.from_ical(
        build_ics(
            uid_prefix="c1", summary="Circle", sessions=moved, sequence=2, cancelled=first[2:]
        )
    )
    old, new = before.walk("VEVENT"), after.walk("VEVENT")
    assert [str(e["uid"]) for e in new] == [str(e["uid"]) for e in old]
    assert [e.decoded("dtstart") for e in new[:2]] == [s["starts_at"] for s in moved]
    assert [int(e["sequence"]) for e in old] == [0, 0, 0]
    assert [int(e["sequence"]) for e in new] == [2, 2, 2]
    assert [str(e.get("status", "")) for e in new] == ["", "", "CANCELLED"]
    assert new[2].decoded("dtstart") == first[2]["starts_at"]


def test_a_move_cancels_the_former_groups_entries_by_their_uids() -> None:
    former = sessions(sh(2026, 6, 3, 19, 30), sh(2026, 6, 10, 19, 30))
    held = Calendar.from_ical(
        build_ics(uid_prefix="old", summary="Circle", sessions=list(reversed(former)), sequence=1)
    ).walk("VEVENT")
    projection = {"_id": "old", "sessions": former, "sessions_sequence": 1}
    told = Calendar.from_ical(
        build_ics(
            uid_prefix="new",
            summary="Circle",
            sessions=sessions(sh(2026, 7, 1, 19, 30)),
            left=left_group(projection),
        )
    ).walk("VEVENT")
    assert [str(e["uid"]) for e in told] == ["new-1@holdspace", *(str(e["uid"]) for e in held)]
    assert [str(e.get("status", "")) for e in told] == ["", "CANCELLED", "CANCELLED"]
    assert [int(e["sequence"]) for e in told[1:]] == [2, 2]  # above what the calendar holds
    assert [e.decoded("dtstart") for e in told[1:]] == [e.decoded("dtstart") for e in held]
    assert left_group({"_id": "old", "sessions": []}) is None and left_group(None) is None


# --- templates ---------------------------------------------------------------------------

REAL_NAME = "Gambling Recovery Circle"


def context_for(template: str) -> dict:
    at = "2026-06-03T11:30:00+00:00"
    return {
        "name": "Ann <script>x</script>",
        "tz": SH,
        "display_name": REAL_NAME,
        "cohort_id": "c1",
        "sessions": [{"starts_at": at, "ends_at": at, "timezone": SH}],
        "status": "confirmed",
        "joining": {
            "platform": "Tencent Meeting",
            "url": "https://meeting.tencent.com/dm/abc",
            "meeting_id": "123 456 789",
            "passcode": "8642",
        },
        "position": 2,
        "offer_expires_at": at,
        "composition": "mixed",
        "withdraw_by": at,
        "verify_by": at,
        "my_url": "https://web.test/my/r1?t=tok",
        "milestone": "Wrote my first letter",
        "reached": 2,
        "of": 6,
        "hold_expires_at": at,
        "signing_url": "https://sign.test/s/abc",
        "expires_at": at,
        "amount": {"amount_minor": 90000, "currency": "CNY"},
        "reference": "HS-1",
        "instructions": "Pay by transfer",
        "scholarship": None,
        "refundable": False,
        "crisis_resources": [{"name": "Hope line", "contact": "12356", "url": None}],
        "starts_at": at,
        "ends_at": at,
        "registration_id": "r1",
        "payment_id": "p1",
        "reason_code": "amount_mismatch",
        "console_url": "https://console.test/",
        "failed_template": "approved",
        "failed_channel": "email",
        "failed_delivery_id": "d1",
        "error_code": "smtp_550",
        "minutes": 30,
    }


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_renders_discreetly_in_both_languages(template: str, lang: str) -> None:
    r = Renderer().render(template, lang, context_for(template))
    assert r.subject and r.preview and "\n" not in r.subject
    for shown in (r.subject, r.preview):  # what a lock screen shows
        assert REAL_NAME not in shown and "Recovery" not in shown and "Gambling" not in shown
    assert r.text.startswith(r.preview)
    assert "<script>" not in r.html
    if template in APPLICANT_TEMPLATES:
        assert "&lt;script&gt;" in r.html
        assert (REAL_NAME in r.text) is (template != "crisis_resources")
        assert "Ann <script>x</script>" in r.text
    if lang == "zh":
        assert any("\u4e00" <= ch <= "\u9fff" for ch in r.subject)


def test_dates_and_amounts_read_naturally() -> None:
    at = "2026-06-03T11:30:00+00:00"
    assert when(at, SH, "en") == "Wednesday 3 June 2026, 19:30 (Asia/Shanghai)"
    assert when(at, SH, "zh") == "2026年6月3日（星期三）19:30（Asia/Shanghai）"
    assert money({"amount_minor": 90000, "currency": "CNY"}) == "900.00 CNY"
    assert money({"amount_minor": 5, "currency": "USD"}) == "0.05 USD"
    assert money({"amount_minor": 500, "currency": "JPY"}) == "500 JPY"


# --- settings -----------------------------------------------------------------------------

PROD = {
    "holdspace_env": "production",
    "jwt_secret": "p" * 40,
    "encryption_key": "cHJvZC1rZXktMzItYnl0ZXMtbG9uZy4uLi4uLi4uLi4=",
    "blind_index_key": "cHJvZC1ibGluZC1rZXktMzItYnl0ZXMtbG9uZy4uLi4=",
    "rabbitmq_url": "amqp://svc:s3cret@mq:5672/",
    "smtp_host": "smtp.example.org",
    "smtp_tls": "starttls",
    "smtp_username": "holdspace",
    "smtp_password": "a-real-secret",
    "coordinator_emails": "ana@example.org",
}


def test_production_refuses_unsafe_mail_and_chat_settings() -> None:
    assert NotificationsSettings(**PROD).service_name == "notifications"
    assert NotificationsSettings(**PROD).http_port == 8004
    for bad, field in [
        ({"smtp_password": "dev-only-smtp-password"}, "SMTP_PASSWORD"),
        ({"smtp_password": None}, "SMTP_PASSWORD"),
        ({"smtp_tls": "none"}, "SMTP_TLS"),
        ({"chat_webhook_url": "http://robot.example.org/hook"}, "CHAT_WEBHOOK_URL"),
        ({"jwt_secret": "dev-only-jwt-secret-change-me-0123456789abcdef"}, "JWT_SECRET"),
    ]:
        with pytest.raises(ValidationError, match=field):
            NotificationsSettings(**{**PROD, **bad})
    # A safety alert has to reach a person: production needs a coordinator channel.
    with pytest.raises(ValidationError, match="COORDINATOR_EMAILS or CHAT_WEBHOOK_URL"):
        NotificationsSettings(**{**PROD, "coordinator_emails": " , "})
    chat_only = {**PROD, "coordinator_emails": "", "chat_webhook_url": "https://robot.example/k"}
    assert NotificationsSettings(**chat_only).coordinator_addresses == []
    # development may use a local sink without TLS or login
    assert NotificationsSettings(smtp_tls="none").smtp_host == "127.0.0.1"
    with pytest.raises(ValidationError):
        NotificationsSettings(quiet_hours_start="25:00")


def test_in_development_coordinator_messages_go_to_the_mail_sink_when_no_address_is_set() -> None:
    from notifications.settings import DEV_COORDINATOR_EMAIL

    assert NotificationsSettings().coordinator_addresses == [DEV_COORDINATOR_EMAIL]
    given = NotificationsSettings(coordinator_emails="ana@example.org, bo@example.org")
    assert given.coordinator_addresses == ["ana@example.org", "bo@example.org"]


def test_payment_problems_and_pending_manual_confirmations_reach_coordinators() -> None:
    from notifications.domain.plan import Audience, plan

    flagged = plan("payment.flagged", {"flag_id": "f", "reason_code": "amount_mismatch"})
    pending = plan("payment.confirmation_pending", {"registration_id": "r"})
    assert [(p.template, p.audience) for p in flagged] == [
        ("coordinator_payment_problem", Audience.coordinators)
    ]
    assert [(p.template, p.audience) for p in pending] == [
        ("coordinator_manual_confirmation", Audience.coordinators)
    ]


@pytest.mark.parametrize(("lang", "says"), [("en", "How to join"), ("zh", "参加方式")])
def test_the_confirmation_says_how_to_join_is_on_the_registration_page(lang, says) -> None:
    context = {**context_for("confirmed"), "my_url": "https://holdspace.test/my/r1?t=tok"}
    r = Renderer().render("confirmed", lang, context)
    for body in (r.text, r.html):
        assert says in body and "https://holdspace.test/my/r1?t=tok" in body


@pytest.mark.parametrize(
    ("lang", "decision", "says"),
    [
        ("en", "granted", "scholarship request was granted"),
        ("en", "declined", "could not be granted this time"),
        ("zh", "granted", "奖学金申请已获批准"),
        ("zh", "declined", "未能批准你的奖学金申请"),
    ],
)
def test_the_payment_request_tells_the_scholarship_decision(lang, decision, says) -> None:
    context = {**context_for("payment_requested"), "scholarship": decision}
    r = Renderer().render("payment_requested", lang, context)
    assert says in r.text and says in r.html
    assert "scholarship" not in r.subject.lower() and "奖学金" not in r.subject
    plain = Renderer().render("payment_requested", lang, {**context, "scholarship": None})
    assert says not in plain.text


@pytest.mark.parametrize(
    ("lang", "refundable", "says"),
    [
        ("en", True, "refunded in full"),
        ("en", False, "please reply to the coordinator"),
        ("zh", True, "全额退还"),
        ("zh", False, "请回复协调人"),
    ],
)
def test_a_cancelled_cohort_tells_whether_money_goes_back(lang, refundable, says) -> None:
    context = {**context_for("cohort_cancelled"), "refundable": refundable}
    r = Renderer().render("cohort_cancelled", lang, context)
    assert says in r.text and says in r.html


def test_changed_sessions_list_the_new_times_in_the_recipients_zone() -> None:
    context = {
        **context_for("sessions_changed"),
        "sessions": [
            {"starts_at": "2026-06-04T12:00:00+00:00", "ends_at": "", "timezone": SH},
            {"starts_at": "2026-06-11T12:00:00+00:00", "ends_at": "", "timezone": SH},
        ],
    }
    r = Renderer().render("sessions_changed", "en", context)
    assert r.text.count("20:00") == 2  # 12:00 UTC is 20:00 in Shanghai
    assert "replaces" in r.text


@pytest.mark.parametrize("template", ["confirmed", "reminder", "sessions_changed", "moved"])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_messages_to_the_confirmed_say_how_to_join_when_it_is_set(template, lang) -> None:
    shown = Renderer().render(template, lang, context_for(template))
    for body in (shown.text, shown.html):
        assert "https://meeting.tencent.com/dm/abc" in body and "8642" in body
    assert "8642" not in shown.subject + shown.preview
    unset = Renderer().render(template, lang, {**context_for(template), "joining": None})
    assert "8642" not in unset.text and "8642" not in unset.html
    old = {k: v for k, v in context_for(template).items() if k != "joining"}
    assert "8642" not in Renderer().render(template, lang, old).text  # recorded before


def test_the_calendar_file_carries_how_to_join() -> None:
    joining = context_for("confirmed")["joining"]
    data = build_ics(
        uid_prefix="c1",
        summary="Circle",
        sessions=sessions(sh(2026, 6, 3, 19, 30)),
        **calendar_joining(joining),
    )
    (event,) = Calendar.from_ical(data).walk("VEVENT")
    assert str(event["location"]) == "Tencent Meeting"
    assert str(event["url"]) == "https://meeting.tencent.com/dm/abc"
    assert "Passcode: 8642" in str(event["description"])
    assert calendar_joining(None) == {}


@pytest.mark.parametrize(("lang", "says"), [("en", "concerns or feedback"), ("zh", "顾虑或反馈")])
def test_every_message_to_an_applicant_says_where_to_write(lang, says) -> None:
    context = {**context_for("approved"), "contact_email": "care@example.org"}
    shown = Renderer().render("approved", lang, context)
    assert says in shown.text and "care@example.org" in shown.text
    assert 'href="mailto:care@example.org"' in shown.html
    assert "care@example.org" not in Renderer().render("approved", lang, context_for("x")).text


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_reminder_says_homework_is_waiting_only_after_a_session_that_set_some(lang: str) -> None:
    from notifications.reminders import when_and_how

    day = datetime(2026, 6, 3, 11, 30, tzinfo=UTC)
    starts = [day + timedelta(weeks=w) for w in range(3)]
    ends = {s: s + timedelta(hours=1) for s in starts}
    cohort = {"display_name": "Wednesday evening group"}

    def context(number: int, homework: set[int]) -> dict:
        reminder = rem.Reminder(f"r{number}", starts[number - 1], 86400, day)
        return context_for("reminder") | when_and_how(cohort, reminder, ends, None, homework)

    assert context(2, {1})["homework_waiting"] and not context(3, {1})["homework_waiting"]
    assert not context(1, {1})["homework_waiting"]  # nothing before the first session
    line = "练习" if lang == "zh" else "set for you to do"
    assert line in Renderer().render("reminder", lang, context(2, {1})).text
    assert line not in Renderer().render("reminder", lang, context(3, {1})).text
    older = {k: v for k, v in context(2, {1}).items() if k != "homework_waiting"}
    assert line not in Renderer().render("reminder", lang, older).text  # queued before
