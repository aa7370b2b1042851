"""Notifications' use cases for events: what each event changes and which messages it
causes. Sending them is sending.py; reminders before sessions are reminders.py.

The path of a message, and why each step is safe to repeat:

1. An event arrives. The projections it changes (the applicant's standing, the
   cohort's roster) are updated conditional on the event id (their inboxes).
2. Each message it causes becomes a delivery document whose ``_id`` is derived from
   (event id, template, recipient): the insert is the once-only check, so a
   redelivered event finds its deliveries already there and sends nothing new.
3. Each is then sent at least once, and recorded once (sending.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from notifications.alerts import SafetyAlerts
from notifications.channels import ChatChannel, EmailChannel
from notifications.cohorts import CohortProjection, RecipientUnknown
from notifications.domain.context import applicant_context, coordinator_context
from notifications.domain.delivery import (
    Status,
    delivery_id,
)
from notifications.domain.plan import (
    WITH_JOINING,
    Audience,
    Planned,
    plan,
    recipient_status_after,
)
from notifications.domain.quiet import send_at
from notifications.reminders import Reminders
from notifications.rendering import Renderer
from notifications.sending import Sender
from notifications.settings import NotificationsSettings
from notifications.store import Sealer, Stores
from shared import events as ev
from shared import tracing
from shared.aggregates import AggregateNotFound, Change
from shared.events import utcnow
from shared.ics import left_group
from shared.logs import get_logger
from shared.security import BlindIndexer

log = get_logger(__name__)


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
        self.settings = settings
        self.stores = stores
        self.sealer = sealer
        self.indexer = indexer or BlindIndexer.from_settings(settings)
        self.quiet = settings.quiet_hours
        self.sender = Sender(
            settings,
            stores,
            sealer,
            alert=self.coordinator_deliveries,
            renderer=renderer,
            email=email,
            chat=chat,
        )
        self.reminders = Reminders(
            settings, stores, sealer, record=self.create_delivery, send_now=self.sender.send_now
        )
        self.cohorts = CohortProjection(stores, self.reminders, sealer)
        self.alerts = SafetyAlerts(
            settings, stores, alert=self.coordinator_deliveries, send_now=self.sender.send_now
        )

    # --- events ------------------------------------------------------------------------

    async def handle(self, payload: ev.EventData, envelope: ev.Envelope) -> None:
        event_type = envelope.type
        data = envelope.data
        rid = data.get("registration_id")
        # One read answers both "erased?" and "to whom?" (an erased one is a tombstone).
        recipient = await self.stores.recipients.get(rid) if rid else None
        if recipient is not None and recipient.get("erased_at"):
            log.info("event about an erased registration dropped", type=event_type)
            return
        if isinstance(
            payload, ev.RegistrationSubmitted | ev.RegistrationEmailVerificationRequested
        ):
            await self._project_submitted(payload)
        elif rid and recipient is None and event_type.startswith("registration."):
            # The consumer handles several deliveries at once, so an event often overtakes
            # the registration.submitted published just before it; that one is usually
            # being handled right now. Waiting for it here spares the retry queue.
            recipient = await self._await_recipient(rid)
        if isinstance(payload, ev.RegistrationMoved):
            recipient = await self._moved(payload, envelope.id)
        standing = recipient_status_after(event_type)
        if standing is not None and rid:
            recipient = await self._set_standing(rid, standing, envelope.id)
            if data.get("cohort_id"):
                await self.cohorts.roster(
                    data["cohort_id"], rid, standing == "confirmed", envelope.id
                )
        if isinstance(payload, ev.RegistrationFlaggedForSafety):
            await self.alerts.raised(
                payload.registration_id,
                payload.cohort_id,
                utcnow(),
                payload.program_id,
                flag_id=envelope.id,
            )
        created: list[str] = []
        for planned in plan(event_type, data):
            created += await self._deliveries_for(envelope, planned, recipient)
        if created and rid and await self.stores.erased(rid):
            # Erased while this event was handled: erasure.erase ran before these were
            # written, or this check sees its tombstone. Either way none survives.
            await self.stores.deliveries.collection.delete_many({"_id": {"$in": created}})
            return
        log.info("event handled", deliveries=len(created))
        self.sender.send_soon(created)

    async def _project_submitted(
        self, p: ev.RegistrationSubmitted | ev.RegistrationEmailVerificationRequested
    ) -> None:
        """Who the registration's messages go to: from the sign-up's verification request,
        or (a registration from before verification existed) its registration.submitted."""
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
            await self.cohorts.ensure(p.cohort)

    async def sessions_changed(self, p: ev.CohortSessionsChanged, envelope: ev.Envelope) -> None:
        """Every confirmed participant gets the new sessions with a calendar file that
        replaces their entries; reminders follow the new sessions. A change older than
        the one already known tells nobody (the newer one's event does)."""
        await self._tell_roster(await self.cohorts.sessions_changed(p), envelope)

    async def joining_changed(self, p: ev.CohortJoiningChanged, envelope: ev.Envelope) -> None:
        """Every confirmed participant gets how to join, with an updated calendar file."""
        await self._tell_roster(await self.cohorts.joining_changed(p), envelope)

    async def _tell_roster(self, cohort: dict[str, Any] | None, envelope: ev.Envelope) -> None:
        if cohort is None:
            return
        (planned,) = plan(envelope.type, envelope.data)
        created: list[str] = []
        for rid in cohort.get("roster", []):
            recipient = await self.stores.recipients.get(rid)
            if recipient is None or recipient.get("standing") != "confirmed":
                continue
            common = {
                "event_id": envelope.id,
                "correlation_id": rid,
                "registration_id": rid,
                "cohort_id": cohort["_id"],
                "urgent": False,
                "calendar": True,
            }
            created.append(
                await self._applicant_delivery(envelope, planned, common, recipient, cohort)
            )
        log.info("participants told", cohort_id=cohort["_id"], deliveries=len(created))
        self.sender.send_soon(created)

    async def _moved(self, p: ev.RegistrationMoved, event_id: str) -> dict[str, Any]:
        """The registration's messages and reminders follow it to the other cohort."""
        await self.cohorts.ensure(p.cohort)
        confirmed = p.status == "confirmed"
        await self.cohorts.roster(p.from_cohort_id, p.registration_id, False, event_id)
        await self.cohorts.roster(p.cohort_id, p.registration_id, confirmed, event_id)

        def decide(doc: dict[str, Any], _state: Any) -> Change | None:
            return (
                None if doc["cohort_id"] == p.cohort_id else Change(set={"cohort_id": p.cohort_id})
            )

        try:
            outcome = await self.stores.recipients.mutate(
                p.registration_id, decide, event_id=event_id
            )
        except AggregateNotFound:
            raise RecipientUnknown("registration not known yet") from None
        assert outcome.doc is not None
        return outcome.doc

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
            return [await self._applicant_delivery(envelope, planned, common, recipient, cohort)]
        if rid and recipient is None and cohort is None:
            raise RecipientUnknown("registration not known yet")
        # A payment flagged for an unknown reference belongs to no registration at all.
        context = coordinator_context(
            data,
            cohort,
            template=planned.template,
            language=self.settings.coordinator_language,
            console_url=self.settings.coordinator_console_url,
        )
        return await self.coordinator_deliveries(common, planned.template, context)

    async def _applicant_delivery(
        self,
        envelope: ev.Envelope,
        planned: Planned,
        common: dict[str, Any],
        recipient: dict[str, Any],
        cohort: dict[str, Any] | None,
    ) -> str:
        contact = self.sealer.open_contact(recipient)
        context = applicant_context(
            envelope.type,
            {**envelope.data, "registration_id": recipient["_id"]},
            recipient,
            contact,
            cohort,
            web_url=self.settings.web_public_url,
        )
        if planned.template in WITH_JOINING and recipient.get("standing") == "confirmed":
            context["joining"] = self.sealer.open_joining(cohort)  # the confirmed only
        if planned.template == "moved" and planned.calendar:  # their old entries cancelled
            left = await self.stores.cohorts.get(envelope.data["from_cohort_id"])
            context["left_group"] = left_group(left)
        due = send_at(
            utcnow(),
            recipient["timezone"],
            self.quiet,
            urgent=planned.urgent or not planned.unprompted,
            deadline=planned.deadline,
        )
        return await self.create_delivery(
            **common,
            template=planned.template,
            audience=Audience.applicant,
            channel="email",
            recipient_ref=recipient["_id"],
            to=contact["email"],
            language=recipient["language"],
            context=context,
            due_at=due,
        )

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
        if self.sender.chat.configured:
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
            # Settings make this unreachable (production refuses to start without a channel,
            # development falls back to the mail sink); said loudly if it ever happens.
            log.error("no coordinator channel configured; alert not sent", template=template)
        return ids

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
            "traceparent": tracing.current_traceparent(),  # the send continues the trace
        }
        try:
            await self.stores.deliveries.create(doc)
        except DuplicateKeyError:
            pass
        return did
