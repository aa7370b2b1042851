"""Every word a page asks for exists in both languages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from payments.domain.cases import Status as PaymentStatus
from registration.domain.ledger import Status
from registration.domain.programs import Gender, RefundPolicy
from web.domain import history, wording
from web.domain.language import choose, from_accept_language
from web.i18n import Translator, catalog

WEB = Path(__file__).resolve().parents[2] / "services" / "web"
LITERAL = re.compile(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]*[a-z])["']""")


def test_both_catalogs_have_the_same_keys_and_no_empty_text() -> None:
    assert set(catalog("en")) == set(catalog("zh"))
    assert all(catalog("en").values()) and all(catalog("zh").values())


def test_every_key_the_pages_name_is_in_the_catalog() -> None:
    sources = [*WEB.rglob("*.j2"), *WEB.rglob("*.py")]
    named = {key for path in sources for key in LITERAL.findall(path.read_text())}
    assert len(named) > 100
    assert sorted(named - set(catalog("en"))) == []


def test_every_registration_status_gender_and_refund_policy_has_words() -> None:
    keys = set(catalog("en"))
    for status in Status:
        s = wording.standing(status.value)
        assert s.status_key != "status.unknown", status
        assert {s.status_key, s.next_key, f"state.{status.value}"} <= keys
    assert {f"gender.{g.value}" for g in Gender} <= keys
    assert {f"refund.{p.value}" for p in RefundPolicy} <= keys
    assert {wording.seats_word(0), wording.seats_word(3)} <= keys


def test_every_history_line_and_payment_status_has_words() -> None:
    keys = set(catalog("en"))
    assert {f"history.{w}" for w in history.WORDS} <= keys
    assert {f"payment_status.{s.value}" for s in PaymentStatus} <= keys


def test_chinese_words_are_chinese() -> None:
    assert Translator("zh")("groups.title") == "开放报名的小组"
    assert Translator("en")("my.position", n=2) == "Your place on the waitlist: 2"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9,zh;q=0.8", "en"),
        ("en;q=0.2,zh-TW;q=0.8", "zh"),
        ("fr-FR,fr;q=0.9", "zh"),
        ("", "zh"),
        ("en;q=0", "zh"),
    ],
)
def test_the_browsers_language(header: str, expected: str) -> None:
    assert from_accept_language(header) == expected


def test_asked_beats_remembered_beats_browser() -> None:
    assert choose("en", "zh", "zh") == "en"
    assert choose(None, "en", "zh") == "en"
    assert choose("xx", None, "en") == "en"


def test_every_page_title_is_words_only() -> None:
    block = re.compile(r"\{% block title %\}(.*?)\{% endblock %\}", re.S)
    for path in WEB.rglob("*.j2"):
        for title in block.findall(path.read_text()):
            assert "<" not in title, f"{path.name}: markup in the title block"
