"""Rate limits on public writes (shared/ratelimit.py): who is counted, and the refusal."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.errors import TooMany
from shared.problems import install_problem_handlers
from shared.ratelimit import RateLimits, client_address, networks

PAGES = networks("127.0.0.1,::1,172.31.240.0/24")


def test_the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    assert client_address("203.0.113.9", None, PAGES) == "203.0.113.9"
    # A stranger cannot choose whom it is counted as.
    assert client_address("203.0.113.9", "198.51.100.1", PAGES) == "203.0.113.9"
    assert client_address("127.0.0.1", "198.51.100.1", PAGES) == "198.51.100.1"
    assert client_address("172.31.240.7", "1.2.3.4, 198.51.100.1", PAGES) == "198.51.100.1"
    assert client_address("127.0.0.1", None, PAGES) == "127.0.0.1"
    assert client_address(None, "198.51.100.1", PAGES) == "unknown"
    assert client_address("not-an-ip", "198.51.100.1", PAGES) == "not-an-ip"
    with pytest.raises(ValueError):
        networks("127.0.0.1,pages.internal")


async def test_a_limit_refuses_past_its_count_with_when_to_come_back() -> None:
    limits = RateLimits()
    for _ in range(3):
        await limits.take("3/minute", "sign-up", "198.51.100.1")
    with pytest.raises(TooMany) as refused:
        await limits.take("3/minute", "sign-up", "198.51.100.1")
    assert 0 < refused.value.retry_after <= 60
    await limits.take("3/minute", "sign-up", "198.51.100.2")  # another client
    for _ in range(50):
        await limits.take("", "sign-up", "198.51.100.1")  # an empty limit is none


def test_a_refusal_answers_429_with_retry_after() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/x")
    async def route() -> None:
        raise TooMany("cohort_id", "too many requests just now", 42)

    answer = TestClient(app).post("/x")
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "42"
    assert answer.json()["field"] == "cohort_id" and answer.json()["retry_after"] == 42
