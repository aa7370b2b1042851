"""How a provider webhook answers when settling fails on our side."""

from __future__ import annotations

from payments.webhooks import _not_processed
from pymongo.errors import AutoReconnect

from shared.aggregates import ConcurrentModification


def test_an_outage_or_a_lasting_write_conflict_is_a_503_and_anything_else_a_500() -> None:
    retry = {"Retry-After": "5"}
    assert _not_processed("wechatpay", AutoReconnect("down")) == (503, retry)
    assert _not_processed("alipay", ConcurrentModification("cases:c-1")) == (503, retry)
    assert _not_processed("alipay", KeyError("amount")) == (500, {})  # a bug of ours
