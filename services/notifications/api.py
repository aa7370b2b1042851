"""Notifications' HTTP API: operators' failed-delivery list and resend, coordinators'
reminder offsets per program. Every route needs a role; nothing here is public.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from notifications.alerts import SafetyAlerts
from notifications.reminders import Reminders
from notifications.sending import Sender
from notifications.views import NotificationViews
from shared.app import provided
from shared.errors import NotFound
from shared.security import Principal, Role, require_role

operator = APIRouter(tags=["operators"])
coordinator = APIRouter(tags=["coordinators"])
# The web pages, for an applicant whose registration token registration accepted.
pages = APIRouter(tags=["applicants (through the pages)"])
Pages = Annotated[Principal, Depends(require_role(Role.pages))]
Operator = Annotated[Principal, Depends(require_role(Role.operator))]
Coordinator = Annotated[Principal, Depends(require_role(Role.coordinator))]
Id = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


Sending = Annotated[Sender, Depends(provided(Sender))]
ReminderSettings = Annotated[Reminders, Depends(provided(Reminders))]
Views = Annotated[NotificationViews, Depends(provided(NotificationViews))]
Alerts = Annotated[SafetyAlerts, Depends(provided(SafetyAlerts))]


class DeliveryView(BaseModel):
    """A delivery as operators see it: references only, never an address or content."""

    delivery_id: str
    event_id: str
    template: str
    channel: str
    audience: str
    recipient_ref: str
    registration_id: str | None = None
    status: str
    attempts: int
    resends: int = 0
    error_code: str | None = None
    last_error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    due_at: datetime | None = None
    finished_at: datetime | None = None
    failed_at: datetime | None = None


def view(doc: dict[str, Any]) -> DeliveryView:
    return DeliveryView(delivery_id=doc["_id"], **{k: doc.get(k) for k in _VIEW_FIELDS if k in doc})


_VIEW_FIELDS = [f for f in DeliveryView.model_fields if f != "delivery_id"]


@pages.get(
    "/registrations/{registration_id}/export",
    summary="What notifications holds about the applicant's registration (their data export)",
)
async def export(registration_id: Id, views: Views, _: Pages) -> dict[str, Any]:
    return await views.export(registration_id)


@operator.get(
    "/deliveries/failed",
    response_model=list[DeliveryView],
    summary="Failed deliveries, newest first",
)
async def list_failed(
    _: Operator, views: Views, limit: int = Query(100, ge=1, le=500)
) -> list[DeliveryView]:
    return [view(d) for d in await views.failed(limit)]


@operator.get("/deliveries/{delivery_id}", response_model=DeliveryView, summary="One delivery")
async def get_delivery(delivery_id: Id, _: Operator, views: Views) -> DeliveryView:
    return view(await views.delivery(delivery_id))


@operator.post(
    "/deliveries/{delivery_id}/resend",
    response_model=DeliveryView,
    status_code=202,
    summary="Send a failed delivery again",
)
async def resend(delivery_id: Id, _: Operator, sender: Sending, views: Views) -> DeliveryView:
    await sender.resend(delivery_id)
    return view(await views.delivery(delivery_id))


MAX_OFFSET_S = 30 * 86400


class ReminderOffsets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offsets_s: list[Annotated[int, Field(ge=1, le=MAX_OFFSET_S)]] = Field(
        min_length=0,
        max_length=10,
        description="seconds before each session a reminder goes (1 s to 30 days), "
        "e.g. [86400, 3600]",
    )

    @field_validator("offsets_s")
    @classmethod
    def _latest_first(cls, values: list[int]) -> list[int]:
        return sorted(set(values), reverse=True)


class ReminderSettingsView(ReminderOffsets):
    program_id: str
    cohorts_rescheduled: int | None = None


@coordinator.get(
    "/programs/{program_id}/reminders",
    response_model=ReminderSettingsView,
    summary="A program's reminder offsets",
)
async def get_reminders(
    program_id: Id, who: Coordinator, reminders: ReminderSettings
) -> ReminderSettingsView:
    who.require(program_id, "program_id", "no such program")
    offsets = await reminders.offsets_for(program_id)
    return ReminderSettingsView(program_id=program_id, offsets_s=list(offsets))


@coordinator.put(
    "/programs/{program_id}/reminders",
    response_model=ReminderSettingsView,
    summary="Set a program's reminder offsets; its cohorts are rescheduled",
)
async def put_reminders(
    program_id: Id, body: ReminderOffsets, who: Coordinator, reminders: ReminderSettings
) -> ReminderSettingsView:
    who.require(program_id, "program_id", "no such program")
    count = await reminders.set_offsets(program_id, tuple(body.offsets_s))
    return ReminderSettingsView(
        program_id=program_id, offsets_s=body.offsets_s, cohorts_rescheduled=count
    )


# A coordinator sees the alerts of their programs (the token names them). An alert
# raised before alerts knew their program is everyone's: a flag must reach a person.


def _sees(who: Principal, alert: dict[str, Any]) -> bool:
    return alert.get("program_id") is None or who.sees(alert["program_id"])


async def _alert_in_scope(registration_id: Id, alerts: Alerts, who: Principal) -> dict[str, Any]:
    alert = await alerts.one(registration_id)
    if not _sees(who, alert):
        raise NotFound("registration_id", "no safety alert for this registration")
    return alert


@coordinator.get("/safety-alerts", summary="Safety alerts no coordinator has acknowledged yet")
async def open_safety_alerts(alerts: Alerts, who: Coordinator) -> list[dict[str, Any]]:
    return [a for a in await alerts.open_alerts() if _sees(who, a)]


@coordinator.get("/safety-alerts/{registration_id}", summary="One safety alert")
async def safety_alert(registration_id: Id, alerts: Alerts, who: Coordinator) -> dict[str, Any]:
    return await _alert_in_scope(registration_id, alerts, who)


@coordinator.post(
    "/safety-alerts/{registration_id}/acknowledge",
    summary="A coordinator has the flag in hand: it is not sent again",
)
async def acknowledge_safety_alert(
    registration_id: Id, alerts: Alerts, who: Coordinator
) -> dict[str, Any]:
    await _alert_in_scope(registration_id, alerts, who)
    return await alerts.acknowledge(registration_id, who.subject)
