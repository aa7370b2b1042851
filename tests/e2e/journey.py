"""The journey: 50 applicants race for the 8 seats of a recovery group cohort, through
every service, and the checks that say it went right.

Each journey opens its own cohort of the recovery group (services/registration/seed.py's
program, whose consent form the consent service was seeded with) and its own applicants
(addresses tagged with the journey), so journeys can share one running system. The
steps, as an applicant, a coordinator and the payment provider would take them:

1. 50 sign-ups at once (spread over the registration replicas): 8 hold a seat in review,
   42 are waitlisted in order;
2. the coordinator approves the 8;
3. each signs the consent form over HTTP, from the link in consent.requested;
4. each pays: a WeChat Pay notification signed as the provider signs it, for the
   reference and amount of payment.requested;
5. enrollment.confirmed reaches the outside subscriber for exactly the 8;
6. one confirmed participant withdraws: the head of the waitlist is offered the seat,
   accepts it and goes through approval, consent and payment to be confirmed.

Hooks let a test do something (a fault) at named points: ``signed_up``, ``approved``,
``signed_half``, ``paid_half``, ``paid``. :meth:`Journey.verify` then checks the
outcome: exactly 8 enrolled, no seat given twice, no message sent twice, the emails
and calendars, no personal data in public events or logs, and that everything drained
(queues, outboxes; dead letters as the test expects).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from icalendar import Calendar
from registration import seed as registration_seed

from shared.topology import SERVICES
from tests.canary import CANARY
from tests.conftest import short_id
from tests.e2e.harness import COORDINATOR_EMAIL, System
from tests.integration.helpers_messaging import eventually
from tests.integration.helpers_notifications import Received
from tests.services import coordinator_headers

N_APPLICANTS = 50
SEATS = 8
SHANGHAI = ZoneInfo("Asia/Shanghai")
WAIT_S = 90.0  # a broker restart adds the relay's back-off to every hop

Hook = Callable[[], Awaitable[None]]


@dataclass
class Applicant:
    n: int
    name: str
    email: str
    registration_id: str = ""
    token: str = ""
    signed_up_as: str = ""
    position: int | None = None


async def create_program(system: System) -> str:
    """The recovery group as registration's seed defines it (consent form ref included)."""
    r = await system.http.post(
        f"{system.url('registration')}/programs",
        json=registration_seed.RECOVERY_GROUP,
        headers=coordinator_headers(),
    )
    assert r.status_code == 201, r.text
    assert r.json()["consent_form_ref"] == "recovery-group-consent"
    return r.json()["program_id"]


class Journey:
    def __init__(self, system: System, program_id: str, label: str) -> None:
        self.system = system
        self.program_id = program_id
        self.label = label
        self.tag = short_id()[:8]
        self.cohort_id = ""
        self.sessions: list[dict[str, str]] = []
        self.applicants = [
            Applicant(n, f"Applicant {n} {self.tag} {CANARY}", f"e2e-{self.tag}-a{n}@example.org")
            for n in range(N_APPLICANTS)
        ]
        self.coordinator = coordinator_headers()
        self.withdrawn: Applicant | None = None
        self.offered: Applicant | None = None
        self.enrolled_first: list[Applicant] = []
        self.timings: dict[str, float] = {}
        self.counts: dict[str, Any] = {}
        # Dead letters already there when the journey began (left by an earlier failure),
        # and those the test causes on purpose (poison), per service.
        self.dead_before: dict[str, int] = {}
        self.expected_dead_now: dict[str, int] = {}
        self.log_marks: dict[str, int] = {}
        self._began = time.monotonic()

    # --- who is who ------------------------------------------------------------------

    @property
    def holders(self) -> list[Applicant]:
        return [a for a in self.applicants if a.signed_up_as == "pending_review"]

    @property
    def waitlisted(self) -> list[Applicant]:
        listed = [a for a in self.applicants if a.signed_up_as == "waitlisted"]
        return sorted(listed, key=lambda a: a.position or 0)

    @property
    def ids(self) -> set[str]:
        return {a.registration_id for a in self.applicants}

    def by_email(self, email: str) -> Applicant:
        return next(a for a in self.applicants if a.email == email)

    def by_id(self, registration_id: str) -> Applicant:
        return next(a for a in self.applicants if a.registration_id == registration_id)

    @contextmanager
    def phase(self, name: str):
        began = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - began, 2)

    # --- HTTP as a client would do it -------------------------------------------------------

    async def request(
        self, method: str, url: str, *, retry_any: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One call; retried while the service is unreachable (killed and starting again).

        A request that may have reached the service is retried only when ``retry_any``
        (calls that are idempotent: an Idempotency-Key, a signed webhook, a GET).
        """
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                return await self.system.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if not (retry_any or isinstance(exc, httpx.ConnectError)):
                    raise
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    # --- the steps --------------------------------------------------------------------------

    async def open_cohort(self) -> None:
        now = datetime.now(UTC)
        first = (now + timedelta(days=10)).astimezone(SHANGHAI)
        first = first.replace(hour=19, minute=30, second=0, microsecond=0)
        self.sessions = [
            {
                "starts_at": (first + timedelta(weeks=w)).isoformat(),
                "ends_at": (first + timedelta(weeks=w, minutes=90)).isoformat(),
                "timezone": "Asia/Shanghai",
            }
            for w in range(6)
        ]
        r = await self.request(
            "POST",
            f"{self.system.url('registration')}/programs/{self.program_id}/cohorts",
            json={
                "label": f"e2e {self.label} {self.tag}",
                "sessions": self.sessions,
                "registration_opens_at": (now - timedelta(hours=1)).isoformat(),
                "registration_closes_at": (now + timedelta(days=7)).isoformat(),
            },
            headers=self.coordinator,
        )
        assert r.status_code == 201, r.text
        self.cohort_id = r.json()["cohort_id"]

    @staticmethod
    def application(a: Applicant, **fields: Any) -> dict[str, Any]:
        """``a``'s sign-up as the recovery group asks for it, with ``fields`` added."""
        return {
            "name": a.name,
            "email": a.email,
            "age_attested": True,
            "safety_answers": {"self_harm": False, "unsafe_now": False},
            "privacy_notice_accepted": True,
            "language": "en",
            "timezone": "Asia/Shanghai",
            **fields,
        }

    async def sign_up_one(self, a: Applicant, **fields: Any) -> str:
        """``a`` signs up (``fields`` added to the usual ones) and verifies the address;
        the status the verification answered."""
        registration = self.system.url("registration")
        r = await self.request(
            "POST",
            f"{registration}/cohorts/{self.cohort_id}/registrations",
            json=self.application(a, **fields),
            headers={"Idempotency-Key": f"e2e-{self.tag}-{a.n}"},
        )
        assert r.status_code == 202, r.text
        a.registration_id, a.token = await self.emailed_link(a)
        r = await self.request(
            "POST",
            f"{registration}/registrations/{a.registration_id}/verify-email",
            headers={"Authorization": f"Bearer {a.token}"},
        )
        assert r.status_code == 200, r.text
        return r.json()["status"]

    async def sign_up(self) -> None:
        async def one(i: int, a: Applicant) -> None:
            r = await self.request(
                "POST",
                f"{self.system.url('registration', i)}/cohorts/{self.cohort_id}/registrations",
                json=self.application(a),
                headers={"Idempotency-Key": f"e2e-{self.tag}-{a.n}"},
                retry_any=True,
            )
            assert r.status_code == 202, r.text
            a.registration_id, a.token = await self.emailed_link(a)

        async def verify(i: int, a: Applicant) -> None:
            # The verifications race for the seats: a sign-up holds nothing before.
            r = await self.request(
                "POST",
                f"{self.system.url('registration', i)}/registrations/{a.registration_id}"
                "/verify-email",
                headers={"Authorization": f"Bearer {a.token}"},
                retry_any=True,
            )
            assert r.status_code == 200, r.text
            answer = r.json()
            a.signed_up_as = answer["status"]
            a.position = answer["waitlist_position"]

        await asyncio.gather(*(one(i, a) for i, a in enumerate(self.applicants)))
        await asyncio.gather(*(verify(i, a) for i, a in enumerate(self.applicants)))
        assert len(self.holders) == SEATS, Counter(a.signed_up_as for a in self.applicants)
        assert [a.position for a in self.waitlisted] == list(range(1, N_APPLICANTS - SEATS + 1))
        assert len(self.ids) == N_APPLICANTS

    async def emailed_link(self, a: Applicant) -> tuple[str, str]:
        """The registration id and token of the verification link sent to ``a``."""

        def sent() -> tuple[str, str]:
            found = [
                s.data
                for s in self.system.spy.of("registration.email_verification_requested")
                if s.data["cohort_id"] == self.cohort_id and s.data["contact"]["email"] == a.email
            ]
            assert found, f"no verification link for {a.email} yet"
            return found[0]["registration_id"], found[0]["contact"]["access_token"]

        return await eventually(sent, timeout=WAIT_S, interval=0.1, what="verification link")

    async def approve(self, applicants: list[Applicant], why: str | None = None) -> None:
        async def one(i: int, a: Applicant) -> None:
            r = await self.request(
                "POST",
                f"{self.system.url('registration', i)}/registrations/{a.registration_id}/approve",
                headers=self.coordinator,
                json={"reason": why} if why else None,
            )
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "awaiting_consent"

        await asyncio.gather(*(one(i, a) for i, a in enumerate(applicants)))

    async def signing_token(self, a: Applicant) -> str:
        requested = await eventually(
            lambda: self.system.spy.latest("consent.requested", a.registration_id),
            timeout=WAIT_S,
            interval=0.1,
            what=f"consent.requested for applicant {a.n}",
        )
        url = requested.data["signing_url"]
        assert url.startswith(f"{self.system.env['CONSENT_PUBLIC_URL']}/consents/"), url
        return url.rsplit("/", 1)[1]

    async def sign_consents(
        self, applicants: list[Applicant], user_agent: str = "holdspace-e2e"
    ) -> None:
        async def one(i: int, a: Applicant) -> None:
            token = await self.signing_token(a)
            base = self.system.url("consent", i)
            shown = await self.request(
                "GET", f"{base}/consents/{token}", params={"language": "en"}, retry_any=True
            )
            assert shown.status_code == 200, shown.text
            form = shown.json()["form"]
            r = await self.request(
                "POST",
                f"{base}/consents/{token}/sign",
                json={
                    "text_sha256": form["text_sha256"],
                    "typed_name": a.name,
                    "acknowledged_clauses": [c["id"] for c in form["clauses"]],
                    "agree_to_sign_electronically": True,
                },
                headers={"User-Agent": user_agent},
            )
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "signed"

        await asyncio.gather(*(one(i, a) for i, a in enumerate(applicants)))

    async def payment_request(self, a: Applicant) -> dict[str, Any]:
        seen = await eventually(
            lambda: self.system.spy.latest("payment.requested", a.registration_id),
            timeout=WAIT_S,
            interval=0.1,
            what=f"payment.requested for applicant {a.n}",
        )
        return seen.data

    async def pay(self, applicants: list[Applicant], hooks: dict[str, Hook]) -> None:
        requests = await asyncio.gather(*(self.payment_request(a) for a in applicants))
        for request in requests:
            assert request["amount"] == {"amount_minor": 90000, "currency": "CNY"}

        async def one(i: int, request: dict[str, Any]) -> None:
            wechat = self.system.wechat
            body = wechat.body(
                out_trade_no=request["reference"], total=request["amount"]["amount_minor"]
            )
            r = await self.request(
                "POST",
                f"{self.system.url('payments', i)}/webhooks/wechatpay",
                content=body,
                headers=wechat.headers(body),
                retry_any=True,  # the provider retries a notification it got no answer to
            )
            assert r.status_code == 200 and r.json()["code"] == "SUCCESS", r.text

        half = len(requests) // 2
        await asyncio.gather(*(one(i, q) for i, q in enumerate(requests[:half])))
        await _call(hooks, "paid_half")
        await asyncio.gather(*(one(i, q) for i, q in enumerate(requests[half:], start=half)))
        await _call(hooks, "paid")

    async def ledger(self) -> dict[str, Any]:
        cohort = await self.system.db("registration").cohorts.find_one(
            {"_id": self.cohort_id}, {"entries": 1, "waitlist": 1, "seats_taken": 1}
        )
        assert cohort is not None
        return cohort

    async def wait_statuses(self, applicants: list[Applicant], status: str) -> None:
        async def check() -> bool:
            entries = (await self.ledger())["entries"]
            wrong = {
                a.n: entries[a.registration_id]["status"]
                for a in applicants
                if entries[a.registration_id]["status"] != status
            }
            assert not wrong, f"not {status}: {wrong}"
            return True

        await eventually(check, timeout=WAIT_S, interval=0.2, what=f"all {status}")

    def confirmed_seen(self) -> dict[str, set[str]]:
        """Distinct enrollment.confirmed event ids per registration, as the subscriber saw."""
        seen: dict[str, set[str]] = {}
        for s in self.system.subscriber.of("enrollment.confirmed", self.ids):
            seen.setdefault(s.data["registration_id"], set()).add(s.id)
        return seen

    async def expect_enrolled(self, applicants: list[Applicant]) -> None:
        await self.wait_statuses(applicants, "confirmed")
        want = {a.registration_id for a in applicants}

        def check() -> bool:
            seen = self.confirmed_seen()
            assert set(seen) == want, f"{len(seen)} of {len(want)} seen"
            return True

        await eventually(check, timeout=WAIT_S, interval=0.1, what="enrollment.confirmed x8")

    async def wait_confirmation_mail(self, applicants: list[Applicant]) -> None:
        """Until each has their confirmation (a withdrawal cancels one not sent yet)."""

        async def check() -> bool:
            dead, _ = (await self.system.queue_figures())[self.system.dlq("notifications")]
            if dead > self.dead_expected(self.expected_dead_now)["notifications"]:
                return True  # lost for good: said below
            mail = self.mail_of()
            late = [
                a.n
                for a in applicants
                if "confirmed" not in {r.template for r in mail.get(a.email, [])}
            ]
            assert not late, f"no confirmation yet for applicants {late}"
            return True

        await eventually(check, timeout=WAIT_S, interval=0.3, what="confirmation emails")
        await self.check_no_message_lost(self.expected_dead_now)

    async def withdraw_one(self) -> None:
        a = self.holders[0]
        self.withdrawn = a
        self.offered = self.waitlisted[0]
        r = await self.request(
            "POST",
            f"{self.system.url('registration')}/registrations/{a.registration_id}/withdraw",
            headers={"Authorization": f"Bearer {a.token}"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "withdrawn"
        await self.wait_statuses([self.offered], "offered")
        await eventually(
            lambda: self.system.spy.of("registration.seat_offered", self.ids),
            timeout=WAIT_S,
            what="registration.seat_offered",
        )
        await eventually(
            lambda: self.system.subscriber.of("enrollment.cancelled", {a.registration_id}),
            timeout=WAIT_S,
            what="enrollment.cancelled",
        )

    async def take_offer(self) -> None:
        a = self.offered
        assert a is not None
        r = await self.request(
            "POST",
            f"{self.system.url('registration')}/registrations/{a.registration_id}/accept-offer",
            headers={"Authorization": f"Bearer {a.token}"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "pending_review"
        await self.approve([a])
        await self.sign_consents([a])
        await self.pay([a], {})
        await self.wait_statuses([a], "confirmed")
        await eventually(
            lambda: a.registration_id in self.confirmed_seen(),
            timeout=WAIT_S,
            what="enrollment.confirmed for the offer taker",
        )

    async def run(self, hooks: dict[str, Hook] | None = None) -> None:
        hooks = hooks or {}
        figures = await self.system.queue_figures()
        self.dead_before = {s: figures[self.system.dlq(s)][0] for s in SERVICES}
        self.log_marks = self.system.log_marks()
        with self.phase("open_cohort"):
            await self.open_cohort()
        with self.phase("sign_up_50"):
            await self.sign_up()
        await _call(hooks, "signed_up")
        with self.phase("approve_8"):
            await self.approve(self.holders)
        await _call(hooks, "approved")
        with self.phase("consent_8"):
            half = SEATS // 2
            await self.sign_consents(self.holders[:half])
            await _call(hooks, "signed_half")
            await self.sign_consents(self.holders[half:])
        with self.phase("pay_8"):
            await self.pay(self.holders, hooks)
        with self.phase("until_8_enrolled"):
            await self.expect_enrolled(self.holders)
        self.enrolled_first = list(self.holders)
        with self.phase("until_8_confirmation_emails"):
            await self.wait_confirmation_mail(self.holders)
        self.counts["enrollment_confirmed_deliveries_for_8"] = len(
            self.system.subscriber.of("enrollment.confirmed", self.ids)
        )
        with self.phase("withdraw_and_offer"):
            await self.withdraw_one()
        with self.phase("offer_taken_to_confirmed"):
            await self.take_offer()
        self.timings["journey"] = round(time.monotonic() - self._began, 2)

    # --- the checks ---------------------------------------------------------------------------

    def final_enrolled(self) -> set[str]:
        assert self.withdrawn is not None and self.offered is not None
        return {a.registration_id for a in self.enrolled_first} - {
            self.withdrawn.registration_id
        } | {self.offered.registration_id}

    async def check_seats(self) -> None:
        """Exactly 8 enrolled, the ledger consistent, no seat given twice."""
        assert self.withdrawn is not None and self.offered is not None
        cohort = await self.ledger()
        statuses = {rid: e["status"] for rid, e in cohort["entries"].items()}
        confirmed = {rid for rid, s in statuses.items() if s == "confirmed"}
        assert confirmed == self.final_enrolled()
        assert len(confirmed) == SEATS
        assert cohort["seats_taken"] == SEATS
        assert statuses[self.withdrawn.registration_id] == "withdrawn"
        rest = [a.registration_id for a in self.waitlisted[1:]]
        assert cohort["waitlist"] == rest  # the order kept, the head gone to the seat
        assert Counter(statuses.values()) == {
            "confirmed": SEATS,
            "withdrawn": 1,
            "waitlisted": N_APPLICANTS - SEATS - 1,
        }

        spy = self.system.spy
        offers = {s.id: s.data["registration_id"] for s in spy.of("registration.seat_offered")}
        offers = {i: r for i, r in offers.items() if r in self.ids}
        # One seat freed, one offer, to the head of the waitlist, never to a seat holder.
        assert list(offers.values()) == [self.offered.registration_id]
        approved = Counter(
            s.data["registration_id"] for s in _distinct(spy.of("registration.approved", self.ids))
        )
        assert approved == Counter(self.final_enrolled() | {self.withdrawn.registration_id})
        for event_type in ("consent.signed", "payment.requested", "payment.confirmed"):
            per = Counter(
                s.data["registration_id"] for s in _distinct(spy.of(event_type, self.ids))
            )
            assert per == approved, (event_type, per)

        # The outside subscriber: every enrollment once (by event id), no personal data.
        confirmed_seen = self.confirmed_seen()
        assert set(confirmed_seen) == set(approved), (len(confirmed_seen), len(approved))
        assert all(len(ids) == 1 for ids in confirmed_seen.values()), confirmed_seen
        sub = self.system.subscriber
        cancelled = {s.data["registration_id"] for s in sub.of("enrollment.cancelled", self.ids)}
        assert cancelled == {self.withdrawn.registration_id}
        waitlisted = {s.data["registration_id"] for s in sub.of("enrollment.waitlisted", self.ids)}
        assert waitlisted == {a.registration_id for a in self.waitlisted}
        raw = b"".join(sub.raw)
        for a in self.applicants:
            assert a.email.encode() not in raw and a.name.encode() not in raw
        deliveries = sub.of("enrollment.confirmed", self.ids)
        self.counts.update(
            enrollment_confirmed_deliveries=len(deliveries),
            enrollment_confirmed_distinct=len(_distinct(deliveries)),
            enrollment_confirmed_redelivered=sum(1 for s in deliveries if s.redelivered),
            seat_offers=len(offers),
        )

    def expected_mail(self) -> dict[str, Counter[str]]:
        """Every message each applicant should get, once."""
        assert self.withdrawn is not None and self.offered is not None
        paid = ["approved", "consent_requested", "payment_requested", "confirmed"]
        want: dict[str, Counter[str]] = {
            a.email: Counter(["verify_email", "signup_received"]) for a in self.applicants
        }
        for a in self.waitlisted:
            want[a.email]["waitlisted"] += 1
        for a in self.enrolled_first:
            want[a.email].update(paid)
        want[self.withdrawn.email]["withdrawn"] += 1
        want[self.offered.email].update(["seat_offered", *paid])
        return want

    def mail_of(self) -> dict[str, list[Received]]:
        mine = {a.email for a in self.applicants}
        found: dict[str, list[Received]] = {}
        with self.system.sink.lock:
            received = list(self.system.sink.received)
        for r in received:
            for to in r.rcpt_tos:
                if to in mine:
                    found.setdefault(to, []).append(r)
        return found

    def coordinator_reviews(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for r in self.system.sink.to(COORDINATOR_EMAIL):
            m = re.search(r"Registration: (\S+)", r.text)
            if r.template == "coordinator_review" and m and m.group(1) in self.ids:
                found[m.group(1)] += 1
        return found

    def dead_expected(self, extra: dict[str, int] | None = None) -> dict[str, int]:
        extra = extra or {}
        return {s: self.dead_before.get(s, 0) + extra.get(s, 0) for s in SERVICES}

    async def check_no_message_lost(self, dead_letters: dict[str, int] | None = None) -> None:
        """Notifications dead-lettered nothing but what the test put there on purpose."""
        expected = self.dead_expected(dead_letters)["notifications"]
        dead, _ = (await self.system.queue_figures())[self.system.dlq("notifications")]
        if dead > expected:
            _, out = await self.system.ops_json("dlq", "list", "notifications")
            lost = Counter((d["type"], (d["last_error"] or "")[:60]) for d in out["dead_letters"])
            raise AssertionError(
                f"notifications dead-lettered {dead - expected} message(s): {dict(lost)}"
            )

    async def check_mail(self, dead_letters: dict[str, int] | None = None) -> None:
        """Every message sent, none twice; calendars right; reviews to the coordinators."""
        dead_letters = dead_letters or self.expected_dead_now
        want = self.expected_mail()
        expected_dead = self.dead_expected(dead_letters)["notifications"]
        reviews_wanted = Counter(
            {rid: 1 for rid in {a.registration_id for a in self.holders} | self.final_enrolled()}
        )

        async def complete() -> bool:
            dead, _ = (await self.system.queue_figures())[self.system.dlq("notifications")]
            if dead > expected_dead:
                return True  # lost for good: no use waiting
            got = {to: Counter(r.template for r in rs) for to, rs in self.mail_of().items()}
            missing = {
                to: dict(w - got.get(to, Counter()))
                for to, w in want.items()
                if w - got.get(to, Counter())
            }
            assert not missing, f"{len(missing)} applicants miss mail: {list(missing.items())[:3]}"
            assert self.coordinator_reviews() == reviews_wanted
            return True

        await eventually(complete, timeout=WAIT_S, interval=0.3, what="every message")
        await self.check_no_message_lost(dead_letters)
        await asyncio.sleep(0.5)  # a duplicate would come right behind
        mail = self.mail_of()
        got = {to: Counter(r.template for r in rs) for to, rs in mail.items()}
        extra = {
            f"applicant {self.by_email(to).n}": dict(c - want[to])
            for to, c in got.items()
            if c - want[to]
        }
        assert not extra, f"sent twice or unexpected: {extra}"
        assert got == want
        assert self.coordinator_reviews() == reviews_wanted
        message_ids = Counter(str(r.message["Message-ID"]) for rs in mail.values() for r in rs)
        assert max(message_ids.values()) == 1, "the same Message-ID twice"
        subjects = Counter((to, r.subject) for to, rs in self.mail_of().items() for r in rs)
        assert max(subjects.values()) == 1  # per recipient, no subject twice either

        starts = sorted(datetime.fromisoformat(s["starts_at"]) for s in self.sessions)
        confirmations = [
            r for rs in self.mail_of().values() for r in rs if r.template == "confirmed"
        ]
        assert len(confirmations) == SEATS + 1
        for r in confirmations:
            ics = r.part("text/calendar")
            assert ics, "the confirmation has no calendar"
            calendar = Calendar.from_ical(ics)
            events = list(calendar.walk("VEVENT"))
            assert sorted(e.decoded("dtstart") for e in events) == starts
            assert {str(e["dtstart"].params.get("TZID")) for e in events} == {"Asia/Shanghai"}
            assert {str(e["summary"]) for e in events} == {"Wednesday evening group"}
        self.counts["emails"] = sum(len(rs) for rs in self.mail_of().values())

    async def check_drained(
        self, dead_letters: dict[str, int] | None = None, *, ops: bool = True
    ) -> dict[str, Any]:
        """Nothing pending anywhere: queues, outboxes; dead letters only where expected
        (``dead_letters``: those the test caused, per service).

        Ends with ``ops status --json``, as an operator would look (unless ``ops`` is false).
        """
        dead_letters = self.dead_expected(dead_letters)

        async def drained() -> bool:
            pending = await self.system.pending_outbox()
            assert not any(pending.values()), f"outbox pending: {pending}"
            figures = await self.system.queue_figures()
            for service in SERVICES:
                ready, consumers = figures[self.system.queue(service)]
                assert ready == 0, f"{service} queue has {ready} ready"
                assert consumers >= 1, f"{service} queue has no consumer"
                dead, _ = figures[self.system.dlq(service)]
                assert dead == dead_letters.get(service, 0), f"{service}.dlq holds {dead}"
            return True

        await eventually(drained, timeout=WAIT_S, interval=0.5, what="everything drained")
        if not ops:
            return {}

        async def operator_sees_it_drained() -> dict:
            # The management API's figures lag up to its statistics interval (5 s):
            # right after a fast drain it may still show a restarted consumer's backlog.
            code, status = await self.system.ops_json(
                "status",
                "--fail-on-unhealthy",
                "--max-dead",
                str(max(dead_letters.values(), default=0)),
            )
            assert code == 0, status["problems"]
            return status

        status = await eventually(
            operator_sees_it_drained, timeout=20, interval=1, what="ops status clean"
        )
        assert [o["pending"] for o in status["outbox"]] == [0] * len(SERVICES), status["outbox"]
        assert all(h["status"] == "ok" for h in status["health"]), status["health"]
        return status

    def check_logs(self) -> None:
        """No applicant's address or name in any service's log."""
        logs = self.system.logs()
        for a in self.applicants:
            assert a.email not in logs and a.name not in logs, f"applicant {a.n} in a log"

    async def verify(
        self, dead_letters: dict[str, int] | None = None, *, ops: bool = True
    ) -> dict[str, Any]:
        with self.phase("verify"):
            await self.check_seats()
            await self.check_mail(dead_letters)
            status = await self.check_drained(dead_letters, ops=ops)
            self.check_logs()
        return status

    def report(self, **extra: Any) -> dict[str, Any]:
        return {
            "journey": self.label,
            "applicants": N_APPLICANTS,
            "seats": SEATS,
            "timings_s": self.timings,
            "counts": self.counts,
            "service_warnings": self.system.log_summary(self.log_marks),
            **extra,
        }


def _distinct(seen: list) -> list:
    by_id = {}
    for s in seen:
        by_id.setdefault(s.id, s)
    return list(by_id.values())


async def _call(hooks: dict[str, Hook], point: str) -> None:
    hook = hooks.get(point)
    if hook is not None:
        await hook()
