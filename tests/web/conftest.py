"""The web app over in-memory APIs and accounts: no service, broker or database runs."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from web.accounts import Accounts
from web.app import create_app
from web.clients import Services
from web.settings import WebSettings

from tests.fakes import MemoryDatabase
from tests.web.fake_apis import FakeApis

PASSWORD = "correct horse battery"
ANA = "acct_00000000000000a1"  # Ana's account id: what tokens carry and services record


@pytest.fixture
def apis() -> FakeApis:
    return FakeApis()


@pytest.fixture
def accounts() -> Accounts:
    db = MemoryDatabase()
    accounts = Accounts(db)  # type: ignore[arg-type]
    db["coordinators"].docs["ana@example.org"] = {
        "_id": "ana@example.org",
        "account_id": ANA,
        "name": "Ana",
        "password_hash": PasswordHasher().hash(PASSWORD),
        "active": True,
    }
    return accounts


@pytest.fixture
def browser(apis: FakeApis, accounts: Accounts) -> Iterator[TestClient]:
    """A browser on the pages (cookies kept), its services answered by ``apis``."""
    settings = WebSettings()
    app = create_app(
        settings, services=Services(settings, transport=apis.transport()), accounts=accounts
    )
    with TestClient(app, base_url="http://127.0.0.1:8000", follow_redirects=False) as client:
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form token"
    return found.group(1)


def form_token_of(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found
    return found.group(1)
