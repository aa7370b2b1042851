"""Consent's pure rules: form versions and their hashes, the signing request, the chain."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from consent.domain import chain, forms, signing
from consent.domain.forms import FormContent, FormProblem, FormSpec
from consent.domain.signing import SignatureIn, Status
from consent.settings import DEV_CONSENT_CHAIN_KEY, ConsentSettings
from pydantic import ValidationError

from shared import errors
from shared import events as ev
from shared.logs import PERSONAL_KEYS
from shared.security import hash_access_token

NOW = datetime(2026, 3, 4, 11, 30, 15, 123456, tzinfo=UTC)
CONTENT = {
    "title": "Agreement",
    "body_markdown": "Group rules.\r\nConfidentiality.  \n",
    "clauses": [
        {"id": "rules", "text": "I follow the rules."},
        {"id": "secret", "text": "I keep it."},
    ],
}


def form_doc(**overrides) -> dict:
    spec = FormSpec(ref="recovery-group-consent", language="en", **{**CONTENT, **overrides})
    return forms.new_form(spec, NOW)


def published(doc: dict) -> dict:
    return {**doc, **forms.publish(doc, NOW)}


# --- forms -----------------------------------------------------------------------------


def test_a_form_id_is_ref_and_language_and_a_program_gets_a_default_ref() -> None:
    assert form_doc()["_id"] == "recovery-group-consent.en"
    spec = FormSpec(program_id="P-1", language="zh", **CONTENT)
    assert forms.new_form(spec, NOW)["_id"] == "program-p-1.zh"
    with pytest.raises(ValidationError):
        FormSpec(language="en", **CONTENT)  # neither ref nor program


def test_clause_ids_must_be_unique_and_languages_known() -> None:
    twice = [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]
    with pytest.raises(ValidationError):
        FormContent(title="t", body_markdown="b", clauses=twice)
    with pytest.raises(ValidationError):
        FormSpec(ref="r", language="fr", **CONTENT)


def test_publishing_freezes_the_draft_with_the_hash_of_its_canonical_text() -> None:
    doc = published(form_doc())
    v1 = forms.current_version(doc)
    assert doc["current_version"] == 1 and v1["version"] == 1
    assert v1["text_sha256"] == hashlib.sha256(v1["canonical_text"].encode()).hexdigest()
    # Line ends and trailing spaces do not change the canonical text.
    assert '"body_markdown":"Group rules.\\nConfidentiality."' in v1["canonical_text"]
    assert forms.version_intact(v1)
    assert not doc["reconsent_pending"]  # version 1 supersedes nothing


def test_a_new_version_is_appended_and_asks_for_reconsent() -> None:
    doc = published(form_doc())
    v1 = copy.deepcopy(forms.current_version(doc))
    doc["draft"] = {**doc["draft"], "body_markdown": "Group rules, revised."}
    doc = published(doc)
    assert doc["current_version"] == 2
    assert forms.version_of(doc, 1) == v1  # untouched
    v2 = forms.current_version(doc)
    assert v2["text_sha256"] != v1["text_sha256"]
    assert doc["reconsent_pending"]
    [request] = doc["reconsent_requests"]
    assert request["version"] == 2 and request["include_confirmed"] is False
    left = forms.reconsent_done(doc, request["id"])
    assert left == {"reconsent_requests": [], "reconsent_pending": False}


def test_publishing_the_same_text_again_is_refused() -> None:
    doc = published(form_doc())
    doc["draft"] = {**doc["draft"], "body_markdown": "Group rules.\nConfidentiality."}
    with pytest.raises(FormProblem) as caught:
        forms.publish(doc, NOW)
    assert caught.value.field == "draft"


def test_a_tampered_version_text_is_detected() -> None:
    v1 = forms.current_version(published(form_doc()))
    assert not forms.version_intact({**v1, "body_markdown": "Something else."})
    assert not forms.version_intact({**v1, "text_sha256": "0" * 64})


@pytest.mark.parametrize(
    ("asked", "header", "expected"),
    [
        ("zh", None, "zh"),
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        (None, "fr-FR", "en"),
        ("fr", None, "en"),
        (None, None, "en"),
    ],
)
def test_the_language_shown(asked, header, expected) -> None:
    assert forms.choose_language(["en", "zh"], asked, header) == expected


def test_the_language_shown_when_only_chinese_exists() -> None:
    assert forms.choose_language(["zh"], None, "en-GB") == "zh"


# --- the signing request ---------------------------------------------------------------

TOKEN = signing.make_token("reg-1", "s" * 43)
TOKEN_HASH = hash_access_token(TOKEN)


def approved(**overrides) -> ev.RegistrationApproved:
    data = {
        "registration_id": "reg-1",
        "cohort_id": "c-1",
        "program_id": "p-1",
        "consent_form_ref": "recovery-group-consent",
        "price": ev.Money(amount_minor=90000, currency="CNY"),
        "refundable": False,
        "hold_expires_at": NOW + timedelta(days=5),
    }
    return ev.RegistrationApproved(**{**data, **overrides})


def request_doc(**overrides) -> dict:
    doc = signing.new_request(
        approved(),
        form_ref="recovery-group-consent",
        token_hash=TOKEN_HASH,
        expires_at=NOW + timedelta(days=5),
        now=NOW,
    )
    return {**doc, **overrides}


def version() -> dict:
    return forms.current_version(published(form_doc()))


def signature(**overrides) -> SignatureIn:
    data = {
        "text_sha256": version()["text_sha256"],
        "typed_name": "  Lin  ",
        "acknowledged_clauses": ["secret", "rules"],
        "agree_to_sign_electronically": True,
    }
    return SignatureIn(**{**data, **overrides})


def signed_doc() -> dict:
    doc = request_doc()
    acknowledged = signing.check_signature(version(), signature())
    body = signing.record_body(
        doc,
        signature_id="sig-1",
        form_id="recovery-group-consent.en",
        version=version(),
        acknowledged=acknowledged,
        signed_at=NOW,
        personal_digest=chain.personal_digest({"typed_name": "sealed"}),
    )
    decision = signing.sign(
        doc,
        TOKEN_HASH,
        NOW,
        body=body,
        personal={"typed_name": "sealed"},
        withdrawal_token_hash="w",
    )
    return {**doc, **decision.set}


def test_token_parsing_finds_the_id_and_refuses_junk() -> None:
    assert signing.consent_id_of(TOKEN) == "reg-1"
    assert signing.consent_id_of("no-dot-at-all") is None
    assert signing.consent_id_of("reg-1.short") is None
    assert signing.consent_id_of(".".join(["x", "s" * 400])) is None


def test_the_open_link_is_accepted_until_it_expires() -> None:
    doc = request_doc()
    signing.check_token(doc, TOKEN_HASH, NOW)
    with pytest.raises(errors.Gone):
        signing.check_token(doc, TOKEN_HASH, NOW + timedelta(days=5))


def test_a_forged_link_is_unknown() -> None:
    forged = hash_access_token(signing.make_token("reg-1", "f" * 43))
    with pytest.raises(errors.NotFound) as caught:
        signing.check_token(request_doc(), forged, NOW)
    assert caught.value.field == "token"


def test_signing_records_the_signature_and_uses_the_link_up() -> None:
    doc = signed_doc()
    assert doc["status"] == Status.signed and doc["token_hash"] is None
    assert doc["past_tokens"] == [{"hash": TOKEN_HASH, "outcome": "signed"}]
    assert doc["needs_record"] and doc["pending_records"][0]["signature_id"] == "sig-1"
    body = doc["pending_records"][0]["body"]
    assert body["clauses_acknowledged"] == ["rules", "secret"]  # the form's order
    assert body["signed_at"] == "2026-03-04T11:30:15.123000+00:00"  # what MongoDB keeps
    with pytest.raises(errors.Conflict) as caught:
        signing.check_token(doc, TOKEN_HASH, NOW)
    assert "already used" in caught.value.message


def test_consent_signed_forwards_price_and_hold_and_carries_no_personal_data() -> None:
    doc = request_doc()
    body = signing.record_body(
        doc,
        signature_id="sig-1",
        form_id="f.en",
        version=version(),
        acknowledged=["rules", "secret"],
        signed_at=NOW,
        personal_digest="d",
    )
    decision = signing.sign(doc, TOKEN_HASH, NOW, body=body, personal={}, withdrawal_token_hash="w")
    [event] = decision.emit
    assert isinstance(event, ev.ConsentSigned)
    assert event.price == ev.Money(amount_minor=90000, currency="CNY")
    assert event.hold_expires_at == NOW + timedelta(days=5) and event.refundable is False
    assert event.form_version == 1 and event.text_sha256 == version()["text_sha256"]
    assert not set(event.model_dump()) & PERSONAL_KEYS
    assert "Lin" not in event.model_dump_json()


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"acknowledged_clauses": ["rules"]}, "acknowledged_clauses", "missing: secret"),
        ({"acknowledged_clauses": ["rules", "secret", "x"]}, "acknowledged_clauses", "unknown"),
        ({"agree_to_sign_electronically": False}, "agree_to_sign_electronically", "agreement"),
    ],
)
def test_an_incomplete_signature_is_refused_naming_the_field(overrides, field, words) -> None:
    with pytest.raises(errors.Invalid) as caught:
        signing.check_signature(version(), signature(**overrides))
    assert caught.value.field == field
    assert words in caught.value.message


def test_a_blank_name_or_a_bad_hash_is_invalid_input() -> None:
    with pytest.raises(ValidationError):
        signature(typed_name="   ")
    with pytest.raises(ValidationError):
        signature(text_sha256="abc")


def test_declining_uses_the_link_and_says_so() -> None:
    decision = signing.decline(request_doc(), TOKEN_HASH, NOW)
    assert decision.set["status"] == Status.declined
    assert [type(e) for e in decision.emit] == [ev.ConsentDeclined]
    with pytest.raises(errors.Conflict):
        signing.check_token({**request_doc(), **decision.set}, TOKEN_HASH, NOW)


def test_expiry_only_when_due_and_only_while_open() -> None:
    doc = request_doc()
    assert signing.expire(doc, NOW) is None
    decision = signing.expire(doc, NOW + timedelta(days=6))
    assert decision.set["status"] == Status.expired
    assert [type(e) for e in decision.emit] == [ev.ConsentExpired]
    assert signing.expire(signed_doc(), NOW + timedelta(days=6)) is None


def test_a_closed_registration_cancels_an_open_request_quietly() -> None:
    decision = signing.registration_closed(request_doc())
    assert decision.set["status"] == Status.cancelled and decision.emit == []
    after = {**request_doc(), **decision.set}
    assert signing.registration_closed(after) is None
    with pytest.raises(errors.Gone):
        signing.check_token(after, TOKEN_HASH, NOW)
    kept = signing.registration_closed(signed_doc())
    assert kept.set == {"registration_closed": True}  # a signature stays signed


def test_withdrawal_needs_the_withdrawal_token_and_happens_once() -> None:
    doc = signed_doc()
    with pytest.raises(errors.NotFound):
        signing.withdraw(doc, "not-it")
    decision = signing.withdraw(doc, "w")
    assert decision.set["status"] == Status.withdrawn
    assert [type(e) for e in decision.emit] == [ev.ConsentWithdrawn]
    assert signing.withdraw({**doc, **decision.set}, "w") is None


def test_reconsent_asks_unconfirmed_signers_of_older_versions_only() -> None:
    doc = signed_doc()
    match = {"form_id": "recovery-group-consent.en", "version": 2, "include_confirmed": False}
    assert signing.needs_reconsent(doc, **match)
    assert not signing.needs_reconsent({**doc, "confirmed": True}, **match)
    assert signing.needs_reconsent(
        {**doc, "confirmed": True}, **{**match, "include_confirmed": True}
    )
    assert not signing.needs_reconsent(doc, **{**match, "version": 1})
    assert not signing.needs_reconsent({**doc, "registration_closed": True}, **match)
    new_hash = hash_access_token(signing.make_token("reg-1", "n" * 43))
    decision = signing.reopen(
        doc, token_hash=new_hash, signing_url="https://x/consents/t", expires_at=NOW
    )
    assert decision.set["round"] == 2 and decision.set["status"] == Status.open
    [event] = decision.emit
    assert isinstance(event, ev.ConsentRequested) and event.reconsent
    with pytest.raises(errors.Conflict):
        signing.reopen(request_doc(), token_hash="h", signing_url="u", expires_at=NOW)
    reopened = {**doc, **decision.set}
    with pytest.raises(errors.Conflict):  # the first link stays used
        signing.check_token(reopened, TOKEN_HASH, NOW)
    signing.check_token(reopened, new_hash, NOW - timedelta(seconds=1))


def test_anchoring_a_record_clears_it_from_pending() -> None:
    doc = signed_doc()
    decision = signing.recorded(doc, "sig-1", 7, "h" * 64)
    assert decision.set["needs_record"] is False and decision.set["pending_records"] == []
    assert decision.set["signatures"][0] | {"seq": 7} == decision.set["signatures"][0]
    assert signing.recorded({**doc, **decision.set}, "sig-1", 7, "h" * 64) is None


# --- the chain -------------------------------------------------------------------------

KEY = b"k" * 32


def build_chain(n: int, key: bytes | None = KEY) -> list[dict]:
    records, prev = [], chain.GENESIS
    for seq in range(1, n + 1):
        personal = {"typed_name": f"sealed-{seq}", "ip": "sealed-ip", "user_agent": "sealed-ua"}
        body = {"signature_id": f"sig-{seq}", "personal_digest": chain.personal_digest(personal)}
        record = chain.make_record(seq, prev, body, personal, key)
        records.append(record)
        prev = record["hash"]
    return records


def test_an_intact_chain_verifies_with_and_without_the_key() -> None:
    records = build_chain(5)
    report = chain.verify(records, KEY)
    assert report.ok and report.records == 5 and report.macs_checked == 5
    assert report.head_hash == records[-1]["hash"]
    assert chain.verify(records).ok


def test_verifying_in_batches_is_the_same_as_at_once() -> None:
    records = build_chain(6)
    report = chain.verify(records[:2], KEY)
    report = chain.verify(records[2:], KEY, report)
    assert report.ok and report.records == 6


@pytest.mark.parametrize(
    ("tamper", "seq", "words"),
    [
        (lambda r: r[2]["body"].update(signature_id="sig-x"), 3, "does not match its hash"),
        (lambda r: r[1]["personal"].update(typed_name="other"), 2, "personal fields"),
        (lambda r: r.pop(3), 4, "missing"),
        (lambda r: r[3].update(prev_hash="f" * 64), 4, "prev_hash"),
    ],
)
def test_the_first_broken_link_is_reported(tamper, seq, words) -> None:
    records = build_chain(6)
    tamper(records)
    report = chain.verify(records, KEY)
    assert not report.ok and report.broken.seq == seq and words in report.broken.reason
    assert report.records == seq - 1


def test_a_chain_rewritten_without_the_key_fails_the_mac_check() -> None:
    records = build_chain(3)
    forged = build_chain(3, key=b"x" * 32)  # consistent hashes, wrong key
    assert chain.verify(forged).ok  # the bare SHA-256 chain cannot tell
    report = chain.verify(forged, KEY)
    assert report.broken.seq == 1 and "MAC" in report.broken.reason
    assert chain.verify(records, KEY).ok


# --- settings --------------------------------------------------------------------------


def test_production_refuses_the_dev_chain_key_and_a_plain_http_link(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "production")
    for name in ("JWT_SECRET", "ENCRYPTION_KEY", "BLIND_INDEX_KEY"):
        monkeypatch.setenv(name, "c2VjcmV0LXZhbHVlLWZvci10ZXN0LW9ubHktMzJieXRlcyE=")
    monkeypatch.setenv("RABBITMQ_URL", "amqp://svc:pw@broker/")
    monkeypatch.setenv("CONSENT_PUBLIC_URL", "https://consent.example.org")
    with pytest.raises(ValidationError, match="CONSENT_CHAIN_KEY"):
        ConsentSettings()
    monkeypatch.setenv("CONSENT_CHAIN_KEY", "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktMzI=")
    assert ConsentSettings().consent_chain_key != DEV_CONSENT_CHAIN_KEY
    monkeypatch.setenv("CONSENT_PUBLIC_URL", "http://consent.example.org")
    with pytest.raises(ValidationError, match="https"):
        ConsentSettings()


def test_the_service_name_and_port_are_fixed_and_links_point_at_consent() -> None:
    settings = ConsentSettings()
    assert settings.service_name == "consent" and settings.http_port == 8002
    assert settings.database_name.endswith("consent")
    settings = ConsentSettings(consent_public_url="https://c.example/")
    assert settings.signing_url("abc.def") == "https://c.example/consents/abc.def"
