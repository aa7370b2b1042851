"""The pretix peer's pure parts: the setup script's output, the venv's reuse, the kept-up
rule, the race's verdict, and the report's Markdown."""

from __future__ import annotations

import copy
from typing import Any

from holdspace_bench import peer

REFUSAL = (
    '{"positions":[{"item":["There is not enough quota available on quota \\"Seats\\" '
    'to perform the operation."]}]}'
)


def test_setup_output_is_parsed_by_event_and_noise_is_ignored() -> None:
    text = (
        "kombu: No hostname was supplied. Reverting to default 'localhost'\n"
        "TOKEN=abc123 ITEM=7 QUOTA=3 EVENT=ramp\n"
        "TOKEN=abc123 ITEM=8 QUOTA=4 EVENT=race\n"
        "TOKEN=half ITEM=9\n"
    )
    events = peer.parse_setup_output(text)
    assert set(events) == {"ramp", "race"}
    assert events["race"] == {"token": "abc123", "item": 8, "quota": 4, "event": "race"}
    assert events["ramp"]["item"] == 7 and events["ramp"]["quota"] == 3
    assert peer.parse_setup_output("Traceback (most recent call last):\n") == {}


PIP_SHOW = """\
Name: pretix
Version: {pretix}
Summary: Reliable event ticketing
---
Name: gunicorn
Version: {gunicorn}
Summary: WSGI HTTP Server for UNIX
"""


def test_venv_is_reused_only_with_the_pinned_versions() -> None:
    pinned = PIP_SHOW.format(pretix=peer.PRETIX_VERSION, gunicorn=peer.GUNICORN_VERSION)
    assert peer.pip_versions(pinned) == {
        "pretix": peer.PRETIX_VERSION,
        "gunicorn": peer.GUNICORN_VERSION,
    }
    assert peer.venv_ready(peer.pip_versions(pinned))
    older = PIP_SHOW.format(pretix="2025.1.0", gunicorn=peer.GUNICORN_VERSION)
    assert not peer.venv_ready(peer.pip_versions(older))
    # pip show prints only what is installed: gunicorn missing.
    alone = PIP_SHOW.split("---")[0].format(pretix=peer.PRETIX_VERSION)
    assert not peer.venv_ready(peer.pip_versions(alone))
    assert not peer.venv_ready(peer.pip_versions(""))
    assert peer.pip_versions("Name: Django\nVersion: 5.2.20\n") == {"django": "5.2.20"}


def test_a_step_keeps_up_only_with_every_order_created_and_p99_within_a_second() -> None:
    assert peer.step_kept_up(sent=100, created=100, errors=0, p99_ms=450.0) == (True, "kept up")
    assert peer.step_kept_up(sent=100, created=100, errors=0, p99_ms=1000.0)[0]
    slow, why = peer.step_kept_up(sent=200, created=200, errors=0, p99_ms=7600.0)
    assert not slow and "7600" in why
    failed, why = peer.step_kept_up(sent=100, created=98, errors=2, p99_ms=None)
    assert not failed and why == "2 of 100 orders not created"
    assert not peer.step_kept_up(sent=0, created=0, errors=0, p99_ms=None)[0]


def replies(created: int, refused: int, *other: tuple[int, str]) -> list[tuple[int, str]]:
    return [(201, '{"code":"ABC12"}')] * created + [(400, REFUSAL)] * refused + list(other)


def test_race_held_with_exactly_the_seats_created_and_listed() -> None:
    v = peer.race_verdict(replies(8, 992), seats=8, orders_listed=8)
    assert v["held"] and v["clean"]
    assert (v["clients"], v["created_201"], v["quota_refusals_400"]) == (1000, 8, 992)
    assert v["other"] == {} and v["orders_in_pretix"] == 8


def test_race_not_held_with_one_order_too_many_or_too_few() -> None:
    nine = peer.race_verdict(replies(9, 991), seats=8, orders_listed=9)
    assert not nine["held"] and nine["created_201"] == 9
    seven = peer.race_verdict(replies(7, 993), seats=8, orders_listed=7)
    assert not seven["held"] and not seven["clean"]
    # 8 answers 201 but 9 orders exist (one whose answer was lost): not held.
    assert not peer.race_verdict(replies(8, 992), seats=8, orders_listed=9)["held"]
    # The order list could not be read: not held.
    assert not peer.race_verdict(replies(8, 992), seats=8, orders_listed=None)["held"]


def test_race_with_a_500_among_the_replies() -> None:
    body = "<h1>Server Error (500)</h1>" + "x" * 500
    v = peer.race_verdict(replies(8, 991, (500, body)), seats=8, orders_listed=8)
    assert v["held"] and not v["clean"]  # the seats held, but not every reply was an answer
    assert v["other"] == {"500": 1}
    assert v["other_samples"]["500"] == body[:200]
    short = peer.race_verdict(replies(7, 992, (500, body)), seats=8, orders_listed=7)
    assert not short["held"]
    # A 400 that is not a quota refusal, and no answer at all, are "other" too.
    odd = peer.race_verdict(
        replies(8, 990, (400, '{"email":["bad"]}'), (-1, "ServerDisconnectedError()")),
        seats=8,
        orders_listed=8,
    )
    assert odd["quota_refusals_400"] == 990 and odd["other"] == {"400": 1, "-1": 1}


def lat(p50: float, p99: float) -> dict[str, Any]:
    return {
        "count": 50,
        "failed": 0,
        "p50_ms": p50,
        "p95_ms": p99 - 1,
        "p99_ms": p99,
        "max_ms": p99 + 1,
    }


MEASURED: dict[str, Any] = {
    "status": "measured",
    "versions": {
        "pretix": "2026.8.0",
        "django": "5.2.20",
        "gunicorn": "27.0.1",
        "postgresql": "15.18 (Debian 15.18-0+deb12u1)",
    },
    "workers": 2,
    "setup_s": {
        "venv": "installed",
        "install": 38.5,
        "initdb": 3.1,
        "migrate": 81.2,
        "events": 4.4,
        "warm_up": 9.9,
    },
    "kept_up_rule": peer.KEPT_UP_RULE,
    "ramp": [
        {
            "offered_per_s": 5.0,
            "duration_s": 10.0,
            "sent": 50,
            "created": 50,
            "achieved_per_s": 5.0,
            "latency": lat(138.0, 214.0),
            "errors": 0,
            "error_kinds": {},
            "kept_up": True,
        },
        {
            "offered_per_s": 10.0,
            "duration_s": 10.0,
            "sent": 100,
            "created": 100,
            "achieved_per_s": 9.6,
            "latency": lat(468.0, 1403.0),
            "errors": 0,
            "error_kinds": {},
            "kept_up": False,
        },
    ],
    "ramp_stopped": "after 10/s (p99 1403.0 ms over 1000 ms)",
    "rates_not_offered": [20.0],
    "race": {
        "clients": 1000,
        "seats": 8,
        "created_201": 8,
        "quota_refusals_400": 992,
        "other": {},
        "other_samples": {},
        "orders_in_pretix": 8,
        "held": True,
        "clean": True,
        "availability": {"available_number": 0, "pending_orders": 8},
        "wall_s": 33.8,
        "latency": lat(15600.0, 33100.0),
    },
    "caveats": peer.CAVEATS,
}


def test_markdown_of_a_measured_peer() -> None:
    text = "\n".join(peer.markdown(MEASURED))
    assert "pretix 2026.8.0 (Django 5.2.20)" in text and "2 sync workers" in text
    assert "PostgreSQL 15.18" in text and "installed in 38.5 s" in text and "migrate 81.2 s" in text
    assert "| 5 | 10 | 5 | 138 | 213 | 214 | 215 | 50 | 0 | yes |" in text
    assert "| 10 | 10 | 9.6 | 468 | 1,402 | 1,403 | 1,404 | 100 | 0 | no |" in text
    assert "The ramp stopped after 10/s" in text and "Not offered: 20." in text
    assert "1,000 orders at once for one quota of 8 seats: **held** (8 orders in pretix)" in text
    assert "992 refused for quota (400), other: none; wall 33.8 s" in text
    assert "p99 33,100 ms" in text
    for caveat in peer.CAVEATS:
        assert f"- {caveat}" in text
    assert "Highest rate kept up" not in text  # no Holdspace ramp given


def test_markdown_reports_a_race_not_held_and_its_odd_replies() -> None:
    result = copy.deepcopy(MEASURED)
    result["race"].update(
        created_201=9, orders_in_pretix=9, held=False, other={"500": 1},
        other_samples={"500": "Server Error"},
    )  # fmt: skip
    text = "\n".join(peer.markdown(result))
    assert "**NOT held** (9 orders in pretix)" in text and "other: 500 ×1" in text
    assert "- reply 500: `Server Error`" in text


def test_markdown_of_an_unavailable_peer_says_exactly_why() -> None:
    why = (
        "python -m pretix migrate: `venv/bin/python -m pretix migrate --no-input` exited 1:\n"
        "django.db.utils.OperationalError: connection refused\n"
        'Is the server running on host "127.0.0.1" and accepting TCP/IP connections?'
    )
    lines = peer.markdown({"status": "unavailable", "step": "python -m pretix migrate", "why": why})
    text = "\n".join(lines)
    assert lines[0].startswith("pretix could not be measured in this run")
    assert "It failed at python -m pretix migrate: `venv" in lines[0] and "exited 1" in lines[0]
    assert "django.db.utils.OperationalError: connection refused" in text
    assert "```" in text and "| offered/s" not in text
    why = "pip install pretix: no end after 1200 s:"
    bare = peer.markdown({"status": "unavailable", "step": "pip install pretix", "why": why})
    assert bare == [f"pretix could not be measured in this run. It failed at {why}"]


def holdspace_step(rate: float, achieved: float, p50: float, p99: float, kept: bool) -> dict:
    return {
        "offered_per_s": rate,
        "achieved_per_s": achieved,
        "latency": lat(p50, p99),
        "errors": 0,
        "kept_up": kept,
    }


def test_side_by_side_shows_the_rates_both_measured() -> None:
    ours = [
        holdspace_step(5.0, 5.0, 12.0, 30.0, True),
        holdspace_step(50.0, 49.9, 15.0, 45.0, True),
    ]
    text = "\n".join(peer.markdown(MEASURED, ours))
    assert "Highest rate kept up: Holdspace 50/s, pretix 5/s" in text
    assert "| 5 | 5 | 12 | 30 | 0 | 5 | 138 | 214 | 0 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 5")]
    assert not any(line.startswith("| 50 |") for line in rows)  # pretix was not offered 50/s


def test_side_by_side_without_a_common_rate_says_so() -> None:
    ours = [
        holdspace_step(25.0, 25.0, 12.0, 30.0, True),
        holdspace_step(100.0, 99.0, 14.0, 60.0, False),
    ]
    text = "\n".join(peer.markdown(MEASURED, ours))
    assert "No rate was offered to both (Holdspace: 25, 100/s; pretix: 5, 10/s)." in text
    assert "Highest rate kept up: Holdspace 25/s, pretix 5/s" in text
