"""The console acts for one account: its id, its programs, and tokens that end when it
signs out or is deactivated. Attacks: another program's groups, a second spelling of
the same email, a session that outlives its account."""

from __future__ import annotations

from argon2 import PasswordHasher
from web.accounts import Accounts

from shared.events import Envelope, StaffAccessRevoked
from shared.security import Role, verify_token
from shared.settings import DEV_JWT_SECRET
from tests.web.conftest import ANA, PASSWORD, csrf_of
from tests.web.fake_apis import GROUP

EN = {"Accept-Language": "en"}


def sign_in(browser, email: str = "ana@example.org"):
    page = browser.get("/console/sign-in", headers=EN)
    return browser.post(
        "/console/sign-in",
        data={"csrf": csrf_of(page.text), "email": email, "password": PASSWORD, "next": "/console"},
        headers=EN,
    )


def revocations(accounts: Accounts) -> list[StaffAccessRevoked]:
    docs = accounts.revocations.collection.docs.values()  # type: ignore[attr-defined]
    entries = [Envelope.model_validate(e) for d in docs for e in d["outbox"]]
    return [StaffAccessRevoked.model_validate(e.data) for e in entries]


def test_the_console_lists_and_asks_for_only_the_coordinators_programs(
    browser, apis, accounts
) -> None:
    accounts.collection.docs["ana@example.org"]["programs"] = ["p-1"]
    other = {**GROUP, "cohort_id": "c-9", "program_id": "p-9", "title": "Not Ana's circle"}
    apis.answer("GET", "/cohorts", [GROUP, other])
    apis.answer("GET", "/cohorts/c-1/registrations", [])
    sign_in(browser)
    page = browser.get("/console", headers=EN)
    assert page.status_code == 200
    assert "Recovery circle" in page.text and "Not Ana's circle" not in page.text
    assert not [c for c in apis.calls if c.url.path.startswith("/cohorts/c-9")]
    (listed,) = [c for c in apis.calls if c.url.path == "/cohorts/c-1/registrations"]
    principal = verify_token(DEV_JWT_SECRET, listed.headers["Authorization"][7:])
    assert principal.subject == ANA and principal.role is Role.coordinator
    assert principal.programs == {"p-1"} and principal.sees("p-1") and not principal.sees("p-9")


def test_the_same_account_under_another_spelling_of_its_email_is_the_same_id(
    browser, apis, accounts
) -> None:
    apis.answer("GET", "/cohorts/c-1/registrations", [])
    sign_in(browser, " ANA@Example.org ")
    browser.get("/console")
    (listed,) = [c for c in apis.calls if c.url.path == "/cohorts/c-1/registrations"]
    assert verify_token(DEV_JWT_SECRET, listed.headers["Authorization"][7:]).subject == ANA


async def test_an_account_from_before_ids_gets_one_stable_id_and_every_program() -> None:
    from tests.fakes import MemoryDatabase

    db = MemoryDatabase()
    accounts = Accounts(db)  # type: ignore[arg-type]
    db["coordinators"].docs["old@example.org"] = {
        "_id": "old@example.org",
        "name": "Old",
        "password_hash": PasswordHasher().hash(PASSWORD),
        "active": True,
    }
    first = await accounts.verify("old@example.org", PASSWORD)
    again = await accounts.current("old@example.org")
    assert first and again and first["account_id"] == again["account_id"]
    assert first["account_id"].startswith("acct_") and "old" not in first["account_id"]
    assert first["programs"] == "*"  # the documented migration: as before, every program
    assert await accounts.names() == {first["account_id"]: "Old"}


def test_signing_out_revokes_the_accounts_tokens_in_every_service(browser, apis, accounts):
    apis.answer("GET", "/cohorts/c-1/registrations", [])
    sign_in(browser)
    page = browser.get("/console")
    assert revocations(accounts) == []
    browser.post("/console/sign-out", data={"csrf": csrf_of(page.text)})
    (revoked,) = revocations(accounts)
    assert revoked.subject == ANA and revoked.reason == "signed_out" and revoked.token_id is None
    assert browser.get("/console").status_code == 303


async def test_deactivating_revokes_every_token_of_the_account(accounts) -> None:
    assert await accounts.deactivate("Ana@example.org")
    (revoked,) = revocations(accounts)
    assert revoked.subject == ANA and revoked.reason == "deactivated"
    assert await accounts.current("ana@example.org") is None
    assert not await accounts.deactivate("nobody@example.org")
