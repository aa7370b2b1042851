"""Notifications' use cases: what the handlers, the due runners and the API call.

The path of a message, and why each step is safe to repeat:

1. An event arrives. The projections it changes (the applicant's standing, the
   cohort's roster) are updated conditional on the event id (their inboxes).
2. Each message it causes becomes a delivery document whose ``_id`` is derived from
   (event id, template, recipient): the insert is the once-only check, so a
   redelivered event finds its deliveries already there and sends nothing new.
3. An attempt first claims the delivery in one write (``sending``, attempts + 1, due
   again only after ``SENDING_CLAIM_S``), then talks to the SMTP server or the chat
   robot, then records the outcome with its notification.sent/failed event (the
   outbox of the delivery document).

A crash between the send and the record leaves the delivery ``sending``; when its
claim runs out it is sent again (at least once rather than maybe never), with the
same Message-ID header so that mail systems that de-duplicate on it show it once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from pymongo.errors import DuplicateKeyError

from notifications.channels import ChatChannel, EmailChannel
from notifications.domain import reminders as rem
from notifications.domain.delivery import (
    ARCHIVABLE,
    DeliveryFailure,
    Status,
    after_failure,
    delivery_id,
    may_attempt,
)
from notifications.domain.ics import build_ics
from notifications.domain.plan import (
    Audience,
    Planned,
    plan,
    recipient_status_after,
    still_wanted,
)
from notifications.domain.quiet import send_at
from notifications.rendering import Renderer
from notifications.settings import NotificationsSettings
from notifications.store import Sealer, Stores
from shared import events as ev
from shared import metrics
from shared.aggregates import AggregateNotFound, Change
from shared.errors import Conflict
from shared.logs import get_logger
from shared.security import BlindIndexer

log = get_logger(__name__)
SOURCE = "holdspace/notifications"
GENERIC_GROUP_NAME = {"en": "your group", "zh": "你的小组"}


class RecipientUnknown(LookupError):
    """The event came before the registration.submitted it depends on: retried later."""


class NotResendable(Conflict):
    def __init__(self, message: str) -> None:
        super().__init__("delivery_id", message)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc_ms(value: datetime | str) -> datetime:
    """As MongoDB keeps it: UTC, milliseconds."""
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    dt = dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def _sessions(ref: ev.CohortRef) -> list[dict[str, Any]]:
    return [
        {"starts_at": _utc_ms(s.starts_at), "ends_at": _utc_ms(s.ends_at), "timezone": s.timezone}
        for s in ref.sessions
    ]


class NotificationService:
    def __init__(
        self,
        settings: NotificationsSettings,
        stores: Stores,
        sealer: Sealer,
        *,
        renderer: Renderer | None = None,
        email: EmailChannel | None = None,
        chat: ChatChannel | None = None,
        indexer: BlindIndexer | None = None,
    ) -> None:
        self._sending: set[asyncio.Task] = set()
        self.settings = settings
        self.stores = stores
        self.sealer = sealer
        self.renderer = renderer or Renderer()
        self.email = email or EmailChannel(settings)
        self.chat = chat or ChatChannel(settings)
        self.indexer = indexer or BlindIndexer.from_settings(settings)
        self.quiet = settings.quiet_hours

    # --- events ------------------------------------------------------------------------

    async def handle(self, payload: ev.EventData, envelope: ev.Envelope) -> None:
        event_type = envelope.type
        data = envelope.data
        rid = data.get("registration_id")
        recipient: dict[str, Any] | None = None
        if isinstance(payload, ev.RegistrationSubmitted):
            await self._project_submitted(payload)
        elif rid and event_type.startswith("registration."):
            # The consumer handles several deliveries at once, so an event often overtakes
            # the registration.submitted published just before it; that one is usually
            # being handled right now. Waiting for it here spares the retry queue.
            recipient = await self._await_recipient(rid)
        standing = recipient_status_after(event_type)
        if standing is not None and rid:
            recipient = await self._set_standing(rid, standing, envelope.id)
            if data.get("cohort_id"):
                await self._roster(data["cohort_id"], rid, standing == "confirmed", envelope.id)
        created: list[str] = []
        for planned in plan(event_type, data):
            created += await self._deliveries_for(envelope, planned, recipient)
        log.info("event handled", deliveries=len(created))
        self.send_soon(created)

    async def _project_submitted(self, p: ev.RegistrationSubmitted) -> None:
        contact = p.contact.model_dump(mode="json")
        doc = {
            "_id": p.registration_id,
            "cohort_id": p.cohort_id,
            "program_id": p.program_id,
            "language": p.contact.language,
            "timezone": p.contact.timezone,
            "standing": "open",
            "sealed": self.sealer.seal_contact(p.registration_id, contact),
        }
        try:
            await self.stores.recipients.create(doc)
        except DuplicateKeyError:
            pass  # a redelivery: the projection is there already
        if p.cohort is not None:
            await self._ensure_cohort(p.cohort)

    async def _ensure_cohort(self, ref: ev.CohortRef) -> None:
        offsets = await self.offsets_for(ref.program_id)
        sessions = _sessions(ref)
        schedule = rem.schedule(sessions, offsets, [])
        try:
            await self.stores.cohorts.create(
                {
                    "_id": ref.cohort_id,
                    "program_id": ref.program_id,
                    "display_name": ref.display_name,
                    "sessions": sessions,
                    "roster": [],
                    "reminders": [r.to_doc() for r in schedule],
                    "next_due_at": rem.next_due(schedule),
                }
            )
            return
        except DuplicateKeyError:
            pass

        def decide(doc: dict[str, Any], _state: Any) -> Change | None:
            if doc["display_name"] == ref.display_name and doc["sessions"] == sessions:
                return None
            return self._reschedule(doc, sessions, offsets, display_name=ref.display_name)

        await self.stores.cohorts.mutate(ref.cohort_id, decide)

    @staticmethod
    def _reschedule(
        doc: dict[str, Any], sessions: list[dict], offsets: tuple[int, ...], **extra: Any
    ) -> Change:
        schedule = rem.schedule(sessions, offsets, doc.get("reminders", []))
        return Change(
            set={
                **extra,
                "sessions": sessions,
                "reminders": [r.to_doc() for r in schedule],
                "next_due_at": rem.next_due(schedule),
            }
        )

    async def _await_recipient(self, rid: str, timeout_s: float = 5.0) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (recipient := await self.stores.recipients.get(rid)) is None:
            if loop.time() >= deadline:
                return None  # let the plan decide; an applicant message raises RecipientUnknown
            await asyncio.sleep(0.1)
        return recipient

    async def _set_standing(self, rid: str, standing: str, event_id: str) -> dict[str, Any]:
        """Record the registration's standing; returns the recipient as it now is."""

        def decide(doc: dict[str, Any], _state: Any) -> Change | None:
            if doc.get("standing") == standing or doc.get("standing") == "closed":
                return None  # closed is final: a late "confirmed" does not reopen it
            return Change(set={"standing": standing})

        try:
            outcome = await self.stores.recipients.mutate(rid, decide, event_id=event_id)
        except AggregateNotFound:
            raise RecipientUnknown("registration not known yet") from None
        assert outcome.doc is not None
        return outcome.doc

    async def _roster(self, cohort_id: str, rid: str, enrolled: bool, event_id: str) -> None:
        def decide(doc: dict[str, Any], _state: Any) -> Change | None:
            roster = list(doc.get("roster", []))
            if enrolled and rid not in roster:
                return Change(set={"roster": [*roster, rid]})
            if not enrolled and rid in roster:
                return Change(set={"roster": [r for r in roster if r != rid]})
            return None

        try:
            await self.stores.cohorts.mutate(cohort_id, decide, event_id=event_id)
        except AggregateNotFound:
            if enrolled:
                raise RecipientUnknown("cohort not known yet") from None

    # --- planning deliveries ------------------------------------------------------------

    async def _deliveries_for(
        self, envelope: ev.Envelope, planned: Planned, recipient: dict[str, Any] | None = None
    ) -> list[str]:
        """The deliveries ``planned`` for ``envelope``; ``recipient`` when just read."""
        data = envelope.data
        rid = data.get("registration_id")
        if recipient is None and rid:
            recipient = await self.stores.recipients.get(rid)
        cohort_id = data.get("cohort_id") or (recipient or {}).get("cohort_id")
        cohort = await self.stores.cohorts.get(cohort_id) if cohort_id else None
        now = utcnow()
        common = {
            "event_id": envelope.id,
            "correlation_id": envelope.correlationid,
            "registration_id": rid,
            "cohort_id": cohort_id,
            "urgent": planned.urgent,
            "calendar": planned.calendar,
        }
        if planned.audience is Audience.applicant:
            if recipient is None:
                raise RecipientUnknown("registration not known yet")
            contact = self.sealer.open_contact(recipient)
            lang = recipient["language"]
            context = self.applicant_context(envelope.type, data, recipient, contact, cohort)
            due = send_at(
                now,
                recipient["timezone"],
                self.quiet,
                urgent=planned.urgent,
                deadline=planned.deadline,
            )
            return [
                await self.create_delivery(
                    **common,
                    template=planned.template,
                    audience=Audience.applicant,
                    channel="email",
                    recipient_ref=rid,
                    to=contact["email"],
                    language=lang,
                    context=context,
                    due_at=due,
                )
            ]
        if rid and recipient is None and cohort is None:
            raise RecipientUnknown("registration not known yet")
        # A payment flagged for an unknown reference belongs to no registration at all.
        context = self.coordinator_context(data, cohort)
        return await self.coordinator_deliveries(common, planned.template, context)

    async def coordinator_deliveries(
        self, common: dict[str, Any], template: str, context: dict[str, Any]
    ) -> list[str]:
        ids = []
        lang = self.settings.coordinator_language
        for address in self.settings.coordinator_addresses:
            ids.append(
                await self.create_delivery(
                    **common,
                    template=template,
                    audience=Audience.coordinators,
                    channel="email",
                    recipient_ref=f"coordinator:{self.indexer.email(address)[:16]}",
                    to=address,
                    language=lang,
                    context=context,
                    due_at=utcnow(),
                )
            )
        if self.chat.configured:
            ids.append(
                await self.create_delivery(
                    **common,
                    template=template,
                    audience=Audience.coordinators,
                    channel="chat",
                    recipient_ref="chat:coordinators",
                    to="",
                    language=lang,
                    context=context,
                    due_at=utcnow(),
                )
            )
        if not ids:
            log.warning("no coordinator channel configured; alert not sent", template=template)
        return ids

    def applicant_context(
        self,
        event_type: str,
        data: dict[str, Any],
        recipient: dict[str, Any],
        contact: dict[str, str],
        cohort: dict[str, Any] | None,
    ) -> dict[str, Any]:
        lang = recipient["language"]
        context: dict[str, Any] = {
            "name": contact.get("name", ""),
            "tz": recipient["timezone"],
            "display_name": (cohort or {}).get("display_name") or GENERIC_GROUP_NAME[lang],
            "cohort_id": recipient["cohort_id"],
            "sessions": [
                {
                    "starts_at": s["starts_at"].isoformat(),
                    "ends_at": s["ends_at"].isoformat(),
                    "timezone": s["timezone"],
                }
                for s in (cohort or {}).get("sessions", [])
            ],
        }
        for key in (
            "position",
            "offer_expires_at",
            "hold_expires_at",
            "signing_url",
            "expires_at",
            "amount",
            "reference",
            "instructions",
            "refundable",
            "crisis_resources",
        ):
            if key in data:
                context[key] = data[key]
        return context

    def coordinator_context(
        self, data: dict[str, Any], cohort: dict[str, Any] | None
    ) -> dict[str, Any]:
        lang = self.settings.coordinator_language
        rid = data.get("registration_id") or "-"
        return {
            "tz": "UTC",
            "registration_id": rid,
            "payment_id": data.get("payment_id") or "-",
            "reason_code": data.get("reason_code", ""),
            "display_name": (cohort or {}).get("display_name") or GENERIC_GROUP_NAME[lang],
            "console_url": self.settings.coordinator_console_url,
        }

    async def create_delivery(
        self,
        *,
        event_id: str,
        template: str,
        recipient_ref: str,
        to: str,
        context: dict[str, Any],
        due_at: datetime,
        expires_at: datetime | None = None,
        **fields: Any,
    ) -> str:
        """Record a delivery once per (event, template, recipient); return its id either way."""
        did = delivery_id(event_id, template, recipient_ref)
        # The working set first, then the log: a delivery moves from one to the other
        # (insert into the log, then delete), so this order cannot miss it.
        if await self.stores.deliveries.get(did) is not None:
            return did
        if await self.stores.delivery_log.find_one({"_id": did}, {"_id": 1}) is not None:
            return did
        fields["audience"] = str(fields["audience"])
        doc = {
            "_id": did,
            "event_id": event_id,
            "template": template,
            "recipient_ref": recipient_ref,
            **fields,
            "status": Status.pending.value,
            "attempts": 0,
            "resends": 0,
            "error_code": None,
            "last_error": None,
            "due_at": due_at,
            "expires_at": expires_at,
            "finished_at": None,
            "failed_at": None,
            "sealed": self.sealer.seal_delivery(did, to, context),
        }
        try:
            await self.stores.deliveries.create(doc)
        except DuplicateKeyError:
            pass
        return did

    # --- sending --------------------------------------------------------------------------

    def send_soon(self, ids: list[str]) -> None:
        """Send the new deliveries now, detached from the event's handler.

        The deliveries are stored already (the handler's work is done, so the event can
        be acked); a send must not be cancelled half-way by the handler's timeout or a
        broker disconnect. If this process dies, the due runner finds them.
        """
        if not ids:
            return
        task = asyncio.get_running_loop().create_task(self.send_now(ids))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def send_now(self, ids: list[str]) -> None:
        """Try the deliveries that are due at once, rather than at the runner's next poll."""

        async def one(did: str) -> None:
            try:
                await self.deliver(did)
            except Exception as exc:  # the runner tries again
                log.warning("delivery attempt error", delivery_id=did, error=type(exc).__name__)

        await asyncio.gather(*(one(d) for d in dict.fromkeys(ids)))

    async def deliveries_due(self, now: datetime) -> list[str]:
        cursor = self.stores.deliveries.collection.find({"due_at": {"$lte": now}}, {"_id": 1}).sort(
            "due_at", 1
        )
        return [d["_id"] async for d in cursor.limit(500)]

    async def deliver(self, did: str) -> None:
        """One attempt at one delivery, if it is due and nobody is sending it.

        The claim is the delivery's own state: one compare-and-set write moves it to
        ``sending`` until ``claim_until``, so of two replicas (or the runner and
        ``send_now``) one sends and the other finds it taken.
        """
        now = utcnow()
        claim_until = now + timedelta(seconds=self.settings.sending_claim_s)

        def claim(doc: dict[str, Any], _state: Any) -> Change | None:
            if not may_attempt(doc["status"], doc.get("due_at"), now):
                return None
            return Change(
                set={
                    "status": Status.sending.value,
                    "attempts": doc["attempts"] + 1,
                    "due_at": claim_until,
                    "last_attempt_at": now,
                },
                result={"interrupted": doc["status"] == Status.sending},
            )

        try:
            outcome = await self.stores.deliveries.mutate(did, claim)
        except AggregateNotFound:
            return
        if outcome.result is None:
            return
        doc = outcome.doc
        bind = {"delivery_id": did, "template": doc["template"], "channel": doc["channel"]}
        if outcome.result["interrupted"]:
            log.warning("sending again after an interrupted attempt", **bind)
        if doc.get("expires_at") is not None and now > doc["expires_at"]:
            log.info("delivery dropped: too late to be useful", **bind)
            await self._finish(doc, Status.dropped)
            return
        if doc["audience"] == Audience.applicant:
            recipient = await self.stores.recipients.get(doc["registration_id"])
            if recipient is None or not still_wanted(doc["template"], recipient["standing"]):
                log.info("delivery cancelled: no longer wanted", **bind)
                await self._finish(doc, Status.cancelled)
                return
        try:
            await self._send(doc)
        except DeliveryFailure as failure:
            await self._failed_attempt(doc, failure)
            return
        await self._finish(doc, Status.sent)
        log.info("delivery sent", attempt=doc["attempts"], **bind)

    async def _send(self, doc: dict[str, Any]) -> None:
        to, context = self.sealer.open_delivery(doc)
        try:
            if doc["channel"] == "chat":
                text = self.renderer.chat_text(doc["template"], doc["language"], context)
            else:
                message = self.email_message(doc, to, context)
        except Exception as exc:  # a template bug: retrying will not fix it
            detail = type(exc).__name__
            raise DeliveryFailure("render_error", temporary=False, detail=detail) from None
        if doc["channel"] == "chat":
            await self.chat.send(text)
        else:
            await self.email.send(message, to)

    def email_message(self, doc: dict[str, Any], to: str, context: dict[str, Any]) -> EmailMessage:
        rendered = self.renderer.render(doc["template"], doc["language"], context)
        message = EmailMessage()
        message["Subject"] = rendered.subject
        message["From"] = self.settings.mail_from
        message["To"] = to
        message["Date"] = formatdate(usegmt=True)
        # Stable per delivery: a repeat after an interrupted attempt carries the same id.
        message["Message-ID"] = f"<{doc['_id']}@{self.settings.message_id_domain}>"
        message["Auto-Submitted"] = "auto-generated"
        message["X-Holdspace-Template"] = doc["template"]
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        if doc.get("calendar") and context.get("sessions"):
            ics = build_ics(
                uid_prefix=f"{context['cohort_id']}",
                summary=context["display_name"],
                sessions=context["sessions"],
            )
            message.add_attachment(
                ics.decode("utf-8"),  # text, so the part declares its charset
                subtype="calendar",
                filename="sessions.ics",
                params={"method": "PUBLISH"},
            )
        return message

    async def _finish(self, doc: dict[str, Any], status: Status) -> None:
        now = utcnow()
        events = []
        if status is Status.sent:
            events.append(
                self._envelope(
                    doc,
                    ev.NotificationSent(
                        delivery_id=doc["_id"],
                        template=doc["template"],
                        channel=doc["channel"],
                        recipient_ref=doc["recipient_ref"],
                    ),
                )
            )
        await self.stores.deliveries.mutate(
            doc["_id"],
            lambda _d, _s: Change(
                set={"status": status.value, "due_at": None, "finished_at": now, "sent_at": now}
                if status is Status.sent
                else {"status": status.value, "due_at": None, "finished_at": now},
                events=events,
            ),
        )
        metrics.DELIVERIES.labels(self.settings.service_name, doc["channel"], status.value).inc()

    async def _failed_attempt(self, doc: dict[str, Any], failure: DeliveryFailure) -> None:
        now = utcnow()
        decision = after_failure(
            failure,
            attempts=doc["attempts"],
            max_attempts=self.settings.delivery_max_attempts,
            now=now,
            base_s=self.settings.delivery_retry_base_s,
            max_s=self.settings.delivery_retry_max_s,
            expires_at=doc.get("expires_at"),
        )
        log.warning(
            "delivery attempt failed",
            delivery_id=doc["_id"],
            template=doc["template"],
            channel=doc["channel"],
            error_code=failure.code,
            temporary=failure.temporary,
            attempt=doc["attempts"],
            outcome=decision.status.value,
        )
        error = {"error_code": failure.code, "last_error": str(failure)[:300]}
        if decision.status is Status.pending:
            await self.stores.deliveries.mutate(
                doc["_id"],
                lambda _d, _s: Change(
                    set={**error, "status": Status.pending.value, "due_at": decision.due_at}
                ),
            )
            return
        alerts: list[str] = []
        if doc["audience"] == Audience.applicant:
            # Before the delivery is marked failed, so a crash in between repeats this
            # (idempotently) instead of losing the alert.
            alerts = await self.coordinator_deliveries(
                {
                    "event_id": f"undeliverable:{doc['_id']}:{doc.get('resends', 0)}",
                    "correlation_id": doc.get("correlation_id"),
                    "registration_id": doc.get("registration_id"),
                    "cohort_id": doc.get("cohort_id"),
                    "urgent": True,
                    "calendar": False,
                },
                "coordinator_undeliverable",
                {
                    "tz": "UTC",
                    "registration_id": doc.get("registration_id") or "",
                    "failed_template": doc["template"],
                    "failed_channel": doc["channel"],
                    "failed_delivery_id": doc["_id"],
                    "error_code": failure.code,
                },
            )
        failed = self._envelope(
            doc,
            ev.NotificationFailed(
                delivery_id=doc["_id"],
                template=doc["template"],
                channel=doc["channel"],
                recipient_ref=doc["recipient_ref"],
                error_code=failure.code,
            ),
        )
        await self.stores.deliveries.mutate(
            doc["_id"],
            lambda _d, _s: Change(
                set={**error, "status": Status.failed.value, "due_at": None, "failed_at": now},
                events=[failed],
            ),
        )
        metrics.DELIVERIES.labels(self.settings.service_name, doc["channel"], "failed").inc()
        await self.send_now(alerts)

    def _envelope(self, doc: dict[str, Any], data: ev.EventData) -> ev.Envelope:
        return ev.make_envelope(
            data,
            source=SOURCE,
            correlation_id=doc.get("correlation_id") or doc.get("registration_id") or doc["_id"],
            causation_id=doc.get("event_id"),
            subject=doc.get("registration_id"),
        )

    # --- reminders ------------------------------------------------------------------------

    async def cohorts_due(self, now: datetime) -> list[str]:
        cursor = self.stores.cohorts.collection.find({"next_due_at": {"$lte": now}}, {"_id": 1})
        return [d["_id"] async for d in cursor]

    async def fire_reminders(self, cohort_id: str) -> None:
        """Send the cohort's due reminders to everyone enrolled; drop the ones too late."""
        now = utcnow()
        cohort = await self.stores.cohorts.get(cohort_id)
        if cohort is None:
            return
        window = self.settings.reminder_window_s
        schedule = [rem.Reminder.from_doc(r) for r in cohort["reminders"]]
        fire, drop = rem.split_due(schedule, now, window)
        ends = {s["starts_at"]: s["ends_at"] for s in cohort["sessions"]}
        created: list[str] = []
        for reminder in fire:
            for rid in cohort.get("roster", []):
                recipient = await self.stores.recipients.get(rid)
                if recipient is None or recipient.get("standing") != "confirmed":
                    continue
                contact = self.sealer.open_contact(recipient)
                expires = rem.expires_at(reminder, window)
                created.append(
                    await self.create_delivery(
                        event_id=f"reminder:{cohort_id}:{reminder.id}",
                        correlation_id=rid,
                        template="reminder",
                        audience=Audience.applicant,
                        channel="email",
                        recipient_ref=rid,
                        registration_id=rid,
                        cohort_id=cohort_id,
                        urgent=False,
                        calendar=False,
                        to=contact["email"],
                        language=recipient["language"],
                        context={
                            "name": contact.get("name", ""),
                            "tz": recipient["timezone"],
                            "display_name": cohort["display_name"],
                            "starts_at": reminder.starts_at.isoformat(),
                            "ends_at": ends.get(reminder.starts_at, reminder.starts_at).isoformat(),
                        },
                        due_at=send_at(
                            now, recipient["timezone"], self.quiet, urgent=False, deadline=expires
                        ),
                        expires_at=expires,
                    )
                )
        states = {r.id: "fired" for r in fire} | {r.id: "dropped" for r in drop}

        def decide(doc: dict[str, Any], _state: Any) -> Change:
            marked = rem.mark([rem.Reminder.from_doc(r) for r in doc["reminders"]], states)
            return Change(
                set={"reminders": [r.to_doc() for r in marked], "next_due_at": rem.next_due(marked)}
            )

        await self.stores.cohorts.mutate(cohort_id, decide)
        if drop:
            log.warning("reminders dropped: their time passed while nothing ran", count=len(drop))
        if fire:
            log.info("reminders fired", count=len(fire), deliveries=len(created))
        await self.send_now(created)

    async def offsets_for(self, program_id: str) -> tuple[int, ...]:
        doc = await self.stores.programs.find_one({"_id": program_id})
        if doc is None:
            return self.settings.default_reminder_offsets
        return tuple(doc["offsets_s"])

    async def set_offsets(self, program_id: str, offsets: tuple[int, ...]) -> int:
        """Store a program's reminder offsets and reschedule its cohorts; returns how many."""
        changed_at = utcnow()
        try:
            await self.stores.programs.update_one(
                {
                    "_id": program_id,
                    "$or": [{"updated_at": None}, {"updated_at": {"$lte": changed_at}}],
                },
                {"$set": {"offsets_s": list(offsets), "updated_at": changed_at}},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # a later change is stored already: it wins
        cohorts = [
            d["_id"]
            async for d in self.stores.cohorts.collection.find(
                {"program_id": program_id}, {"_id": 1}
            )
        ]

        def decide(doc: dict[str, Any], _s: Any) -> Change | None:
            # Two coordinators saving at once: the later change wins everywhere.
            if doc.get("offsets_changed_at") and doc["offsets_changed_at"] > changed_at:
                return None
            change = self._reschedule(doc, doc["sessions"], offsets)
            change.set["offsets_changed_at"] = changed_at
            return change

        for cohort_id in cohorts:
            await self.stores.cohorts.mutate(cohort_id, decide)
        return len(cohorts)

    # --- the working set and operators ---------------------------------------------------

    async def archivable(self, now: datetime) -> list[str]:
        cutoff = now - timedelta(seconds=self.settings.archive_after_s)
        cursor = self.stores.deliveries.collection.find(
            {"finished_at": {"$lte": cutoff}}, {"_id": 1, "status": 1}
        )
        return [d["_id"] async for d in cursor if d["status"] in ARCHIVABLE][:500]

    async def archive(self, did: str) -> None:
        """Move a finished delivery to the log, without its sealed address and content."""
        store = self.stores.deliveries
        doc = await store.get(did)
        if doc is None or doc["status"] not in ARCHIVABLE or doc.get("outbox"):
            return
        record = {
            k: v
            for k, v in doc.items()
            if k not in ("sealed", "outbox", "inbox", "has_outbox", "relay_claim", "due_claim")
        }
        try:
            await self.stores.delivery_log.insert_one(record)
        except DuplicateKeyError:
            pass
        # Only the version copied: a change since (a resend) keeps the delivery.
        await store.collection.delete_one({"_id": did, "version": doc["version"]})

    async def resend(self, did: str) -> None:
        now = utcnow()

        def decide(doc: dict[str, Any], _state: Any) -> Change:
            if doc["status"] != Status.failed:
                raise NotResendable(f"only a failed delivery can be resent, not {doc['status']}")
            return Change(
                set={
                    "status": Status.pending.value,
                    "due_at": now,
                    "attempts": 0,
                    "resends": doc.get("resends", 0) + 1,
                    "failed_at": None,
                    "expires_at": None,  # the operator decided it is still worth sending
                }
            )

        try:
            await self.stores.deliveries.mutate(did, decide)
        except AggregateNotFound:
            await self.stores.delivery(did)  # archived ones are not failed: 404 or 409
            raise NotResendable("only a failed delivery can be resent") from None
        log.info("delivery resent by an operator", delivery_id=did)
        await self.send_now([did])
