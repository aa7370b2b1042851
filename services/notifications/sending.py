"""Sending a delivery: claim it, send it once, record what happened.

An attempt first claims the delivery in one write (``sending``, attempts + 1, due
again only after ``SENDING_CLAIM_S``), then talks to the SMTP server or the chat
robot, then records the outcome with its notification.sent/failed event (the outbox
of the delivery document). A crash between the send and the record leaves the
delivery ``sending``; when its claim runs out it is sent again (at least once rather
than maybe never), with the same Message-ID header so that mail systems that
de-duplicate on it show it once. A message to an applicant that finally fails alerts
the coordinators. Operators can send a failed delivery again; finished ones move to
the delivery log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from pymongo.errors import DuplicateKeyError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from notifications.channels import ChatChannel, EmailChannel
from notifications.domain.delivery import (
    ARCHIVABLE,
    DeliveryFailure,
    Status,
    after_failure,
    may_attempt,
)
from notifications.domain.plan import Audience, still_wanted
from notifications.rendering import Renderer
from notifications.settings import NotificationsSettings
from notifications.store import SOURCE, Sealer, Stores
from shared import events as ev
from shared import metrics, tracing
from shared.aggregates import AggregateNotFound, Change
from shared.errors import Conflict
from shared.events import utcnow
from shared.ics import build_ics, calendar_joining
from shared.logs import get_logger
from shared.mongo import unreachable

log = get_logger(__name__)

# (common delivery fields, template, context) -> ids of the coordinators' deliveries
AlertCoordinators = Callable[[dict[str, Any], str, dict[str, Any]], Awaitable[list[str]]]


class NotResendable(Conflict):
    def __init__(self, message: str) -> None:
        super().__init__("delivery_id", message)


class Sender:
    def __init__(
        self,
        settings: NotificationsSettings,
        stores: Stores,
        sealer: Sealer,
        *,
        alert: AlertCoordinators,
        renderer: Renderer | None = None,
        email: EmailChannel | None = None,
        chat: ChatChannel | None = None,
    ) -> None:
        self._sending: set[asyncio.Task] = set()
        self.settings = settings
        self.stores = stores
        self.sealer = sealer
        self.alert = alert
        self.renderer = renderer or Renderer()
        self.email = email or EmailChannel(settings)
        self.chat = chat or ChatChannel(settings)
        # Sends started by send_soon and not finished: work the queues no longer show.
        metrics.DELIVERIES_SENDING.labels(settings.service_name).set_function(
            lambda: len(self._sending)
        )

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
        due = self.stores.deliveries.collection.find({"due_at": {"$lte": now}}, {"_id": 1})
        return [d["_id"] async for d in due.sort("due_at", 1).limit(500)]

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
        rid = doc.get("registration_id")
        recipient = await self.stores.recipients.get(rid) if rid else None
        if recipient is not None and recipient.get("erased_at"):  # a tombstone
            await self.stores.deliveries.collection.delete_one({"_id": did})
            log.info("delivery dropped: the registration was erased", **bind)
            return
        if doc["audience"] == Audience.applicant:
            if recipient is None or not still_wanted(doc["template"], recipient["standing"]):
                log.info("delivery cancelled: no longer wanted", **bind)
                await self._finish(doc, Status.cancelled)
                return
        # A retry runs apart from the asking event's span: it still continues its trace.
        with tracing.joined(doc.get("traceparent"), f"{doc['channel']} delivery"):
            try:
                await self._send(doc)
            except DeliveryFailure as failure:
                await self._failed_attempt(doc, failure)
                return
            await self._record_sent(doc, claim_until)
            log.info("delivery sent", attempt=doc["attempts"], **bind)

    async def _record_sent(self, doc: dict[str, Any], claim_until: datetime) -> None:
        """The message is out: if the database does not take the record now, the claim
        runs out and the message goes a second time. So the record waits for the
        database, while the claim holds (with a fifth of it to spare: past it another
        attempt may already be under way)."""
        budget_s = (claim_until - utcnow()).total_seconds() * 0.8
        retrying = AsyncRetrying(
            retry=retry_if_exception(unreachable),
            stop=stop_after_delay(max(0.0, budget_s)),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._finish(doc, Status.sent)

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
        with tracing.span(
            f"{doc['channel']} send",
            kind=tracing.SpanKind.CLIENT,
            parent=doc.get("traceparent"),
            attributes={"holdspace.template": doc["template"], "holdspace.delivery_id": doc["_id"]},
        ):
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
                sequence=context.get("calendar_sequence", 0),
                cancelled=context.get("cancelled_sessions"),
                left=context.get("left_group"),
                **calendar_joining(context.get("joining")),
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
                    ev.NotificationSent(**_delivery_ref(doc)),
                )
            )

        def finish(current: dict[str, Any], _state: Any) -> Change | None:
            if current["status"] == status.value:
                return None  # a retried record whose first try was written after all
            done = {"status": status.value, "due_at": None, "finished_at": now}
            if status is Status.sent:
                done["sent_at"] = now
            return Change(set=done, events=events)

        await self.stores.deliveries.mutate(doc["_id"], finish)
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
            alerts = await self._alert_coordinators(doc, failure)
        failed = self._envelope(
            doc,
            ev.NotificationFailed(**_delivery_ref(doc), error_code=failure.code),
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

    async def _alert_coordinators(self, doc: dict[str, Any], failure: DeliveryFailure) -> list[str]:
        """A message to an applicant could not be delivered: a person must know."""
        return await self.alert(
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

    def _envelope(self, doc: dict[str, Any], data: ev.EventData) -> ev.Envelope:
        return ev.make_envelope(
            data,
            source=SOURCE,
            correlation_id=doc.get("correlation_id") or doc.get("registration_id") or doc["_id"],
            causation_id=doc.get("event_id"),
            subject=doc.get("registration_id"),
        )

    # --- operators and the working set -------------------------------------------------

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
            await self.stores.delivery(did)  # unknown: NotFound; archived: not failed, so below
            raise NotResendable("only a failed delivery can be resent") from None
        log.info("delivery resent by an operator", delivery_id=did)
        await self.send_now([did])


def _delivery_ref(doc: dict[str, Any]) -> dict[str, str]:
    """What a notification.sent/failed event says of its delivery: references only."""
    return {
        "delivery_id": doc["_id"],
        "template": doc["template"],
        "channel": doc["channel"],
        "recipient_ref": doc["recipient_ref"],
    }
