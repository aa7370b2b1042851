"""Safety alerts that wait for a person: each safety flag is an alert until a coordinator
acknowledges it in the console; unacknowledged after ``SAFETY_ACK_S`` it is sent again,
marked as escalated, to every coordinator channel, up to ``SAFETY_ESCALATIONS`` times.

An escalation's deliveries are recorded before the alert counts it, with ids derived
from (alert, escalation number): a crash between the two sends nothing twice, and the
next run finishes the count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from notifications.domain.context import coordinator_context
from notifications.settings import NotificationsSettings
from notifications.store import Stores
from shared.aggregates import Change
from shared.errors import NotFound
from shared.events import utcnow
from shared.logs import get_logger

log = get_logger(__name__)

ESCALATION = "coordinator_safety_escalation"
AlertCoordinators = Callable[[dict[str, Any], str, dict[str, Any]], Awaitable[list[str]]]
SendNow = Callable[[list[str]], Awaitable[None]]


class SafetyAlerts:
    def __init__(
        self,
        settings: NotificationsSettings,
        stores: Stores,
        *,
        alert: AlertCoordinators,
        send_now: SendNow,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.alert = alert
        self.send_now = send_now
        self.wait = timedelta(seconds=settings.safety_ack_s)

    async def raised(
        self,
        registration_id: str,
        cohort_id: str,
        now: datetime,
        program_id: str | None = None,
        flag_id: str | None = None,
    ) -> None:
        """A flag came in: its alert waits for an acknowledgement (once per flag). A new
        flag for someone whose earlier one was acknowledged (a safety answer between
        sessions, after intake's) opens the alert again; a redelivered one does not."""
        doc = {
            "_id": registration_id,
            "cohort_id": cohort_id,
            "program_id": program_id,
            "raised_at": now,
            "next_at": now + self.wait,
            "escalations": 0,
            "acknowledged": None,
        }
        doc["flag_id"] = flag_id
        try:
            await self.stores.alerts.create(doc)
        except DuplicateKeyError:
            if flag_id is None:
                return  # a redelivered flag: its alert is there already
            again = {k: doc[k] for k in ("raised_at", "next_at", "escalations", "acknowledged")}
            await self.stores.alerts.collection.update_one(
                {"_id": registration_id, "flag_id": {"$ne": flag_id}},
                {"$set": {**again, "flag_id": flag_id}},
            )

    async def due(self, now: datetime) -> list[str]:
        cursor = self.stores.alerts.collection.find(
            {"acknowledged": None, "next_at": {"$lte": now}}, {"_id": 1}
        )
        return [d["_id"] async for d in cursor]

    async def escalate(self, registration_id: str, now: datetime | None = None) -> None:
        """Send the alert again to every coordinator channel, if still unacknowledged."""
        now = now or utcnow()
        alert = await self.stores.alerts.get(registration_id)
        if alert is None or alert["acknowledged"] is not None:
            return
        if alert["next_at"] is None or alert["next_at"] > now:
            return
        number = alert["escalations"] + 1
        cohort = await self.stores.cohorts.get(alert["cohort_id"])
        context = {
            **coordinator_context(
                {"registration_id": registration_id},
                cohort,
                template=ESCALATION,
                language=self.settings.coordinator_language,
                console_url=self.settings.coordinator_console_url,
            ),
            "minutes": int((now - alert["raised_at"]).total_seconds() // 60),
        }
        common = {
            "event_id": f"safety-alert:{registration_id}:{number}",
            "correlation_id": registration_id,
            "registration_id": registration_id,
            "cohort_id": alert["cohort_id"],
            "urgent": True,
            "calendar": False,
        }
        created = await self.alert(common, ESCALATION, context)

        def count(doc: dict[str, Any], _state: Any) -> Change | None:
            if doc["acknowledged"] is not None or doc["escalations"] != number - 1:
                return None
            last = number >= self.settings.safety_escalations
            return Change(set={"escalations": number, "next_at": None if last else now + self.wait})

        await self.stores.alerts.mutate(registration_id, count)
        log.warning("safety alert escalated", escalation=number, deliveries=len(created))
        await self.send_now(created)

    async def acknowledge(self, registration_id: str, by: str) -> dict[str, Any]:
        """A coordinator has it: no more escalations. The first acknowledgement stands."""
        if await self.stores.alerts.get(registration_id) is None:
            raise NotFound("registration_id", "no safety alert for this registration")

        def ack(doc: dict[str, Any], _state: Any) -> Change | None:
            if doc["acknowledged"] is not None:
                return None
            return Change(set={"acknowledged": {"by": by, "at": utcnow()}, "next_at": None})

        return alert_out((await self.stores.alerts.mutate(registration_id, ack)).doc)

    async def open_alerts(self) -> list[dict[str, Any]]:
        """Alerts still waiting for a coordinator, oldest first."""
        cursor = self.stores.alerts.collection.find({"acknowledged": None}).sort("raised_at", 1)
        return [alert_out(d) async for d in cursor]

    async def one(self, registration_id: str) -> dict[str, Any]:
        alert = await self.stores.alerts.get(registration_id)
        if alert is None:
            raise NotFound("registration_id", "no safety alert for this registration")
        return alert_out(alert)


def alert_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "registration_id": doc["_id"],
        "cohort_id": doc["cohort_id"],
        "program_id": doc.get("program_id"),
        "raised_at": doc["raised_at"],
        "escalations": doc["escalations"],
        "next_escalation_at": doc["next_at"],
        "acknowledged": doc["acknowledged"],
    }
