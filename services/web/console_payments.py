"""The console's payments: transfers applicants say they made, marked as received by
one coordinator and approved by another (payments' maker-checker), nothing counting
before the second; scholarship requests to decide; refunds the policy calls for."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from web.console import Coordinator
from web.forms import minor_units
from web.pages import Api
from web.rendering import page
from web.sessions import Form

router = APIRouter(prefix="/console")


def _waiting_order(case: dict[str, Any]) -> tuple[bool, str]:
    """Those who say they paid first, then by reference."""
    return (case.get("said_paid_at") is None, case.get("reference") or "")


@router.get("/payments", response_class=HTMLResponse)
async def payments(request: Request, api: Api, who: Coordinator) -> HTMLResponse:
    me = who
    requested, awaiting, scholarships, refunds = await asyncio.gather(
        api.as_coordinator(me, "payments", "GET", "/payments", params={"status": "requested"}),
        api.as_coordinator(me, "payments", "GET", "/manual-confirmations"),
        api.as_coordinator(me, "payments", "GET", "/scholarships"),
        api.as_coordinator(me, "payments", "GET", "/refunds"),
    )
    to_approve, mine = [], []
    for case in awaiting:
        for mark in case["manual"]:
            if mark["status"] == "pending":
                mark_is_mine = mark["marked_by"] == me["account_id"]
                (mine if mark_is_mine else to_approve).append({**mark, "case": case})
    marked = {m["case"]["payment_id"] for m in to_approve + mine}
    waiting = sorted((c for c in requested if c["payment_id"] not in marked), key=_waiting_order)
    return page(
        request,
        "console/payments.html.j2",
        who=who,
        waiting=waiting,
        to_approve=to_approve,
        mine=mine,
        new_key=lambda: str(uuid.uuid4()),
        scholarships=scholarships,
        refunds=refunds,
        error=request.query_params.get("error"),
        names=await request.app.state.accounts.names(),
    )


@router.post("/payments/{payment_id}/received")
async def mark_received(
    payment_id: str, request: Request, api: Api, who: Coordinator, form: Form
) -> RedirectResponse:
    case = await api.as_coordinator(who, "payments", "GET", f"/payments/{payment_id}")
    await api.as_coordinator(
        who,
        "payments",
        "POST",
        "/manual-confirmations",
        json={
            "reference": case["reference"],
            "amount_minor": case["amount_due"],
            "currency": case["currency"],
            "evidence": form.get("evidence") or None,
        },
        headers={"Idempotency-Key": form.get("form_token") or str(uuid.uuid4())},
    )
    return RedirectResponse("/console/payments", status_code=303)


def _why(form: Any) -> dict[str, str] | None:
    """The coordinator's reason, when they gave one: payments keeps it sealed beside who
    decided."""
    reason = (form.get("reason") or "").strip()
    return {"reason": reason} if reason else None


@router.post("/confirmations/{confirmation_id}/{decision}")
async def decide(
    confirmation_id: str, decision: str, request: Request, api: Api, who: Coordinator, form: Form
) -> RedirectResponse:
    if decision not in ("approve", "reject"):
        raise HTTPException(404)
    await api.as_coordinator(
        who,
        "payments",
        "POST",
        f"/manual-confirmations/{confirmation_id}/{decision}",
        json=_why(form),
    )
    return RedirectResponse("/console/payments", status_code=303)


@router.post("/scholarships/{registration_id}/{decision}")
async def scholarship(
    registration_id: str, decision: str, request: Request, api: Api, who: Coordinator, form: Form
) -> RedirectResponse:
    if decision == "grant":
        amount = minor_units(form.get("amount_due", ""))
        if amount is None:
            return RedirectResponse("/console/payments?error=amount_due", status_code=303)
        body = {"amount_due_minor": amount, **(_why(form) or {})}
    elif decision == "decline":
        body = _why(form)
    else:
        raise HTTPException(404)
    await api.as_coordinator(
        who, "payments", "POST", f"/scholarships/{registration_id}/{decision}", json=body
    )
    return RedirectResponse("/console/payments", status_code=303)


@router.post("/payments/{payment_id}/refund-made")
async def refund_made(
    payment_id: str, request: Request, api: Api, who: Coordinator, form: Form
) -> RedirectResponse:
    await api.as_coordinator(who, "payments", "POST", f"/payments/{payment_id}/refund-made")
    return RedirectResponse("/console/payments", status_code=303)


@router.post("/groups/{cohort_id}/scholarship-budget")
async def scholarship_budget(
    cohort_id: str, request: Request, api: Api, who: Coordinator, form: Form
) -> RedirectResponse:
    """What the group can give in scholarships; a grant draws on it and cannot exceed it."""
    back = f"/console/groups/{quote(cohort_id)}"
    amount = minor_units(form.get("amount", ""))
    if amount is None:
        return RedirectResponse(f"{back}?error=budget_amount#budget", status_code=303)
    group = await api.call("registration", "GET", f"/cohorts/{quote(cohort_id)}")
    await api.as_coordinator(
        who,
        "payments",
        "PUT",
        f"/cohorts/{cohort_id}/scholarship-budget",
        json={
            "amount_minor": amount,
            "currency": form.get("currency") or "CNY",
            "program_id": group["program_id"],  # payments answers it to that program only
        },
    )
    return RedirectResponse(f"{back}#budget", status_code=303)
