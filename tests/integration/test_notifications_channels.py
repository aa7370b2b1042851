"""The two channels against real servers: an SMTP sink with failure modes, a chat robot.

What matters is the classification: whether trying again can help (connection refused,
timeouts, 4xx) or not (5xx, an invalid address, a robot that refuses the message).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest
from notifications.channels import ChatChannel, EmailChannel
from notifications.domain.delivery import DeliveryFailure
from notifications.settings import NotificationsSettings

from shared.devinfra import free_port
from tests.integration.helpers_notifications import ChatRobot, SmtpSink


@pytest.fixture(scope="module")
def sink() -> SmtpSink:
    s = SmtpSink().start()
    yield s
    s.stop()


@pytest.fixture
async def robot() -> AsyncIterator[ChatRobot]:
    r = await ChatRobot().start()
    yield r
    await r.stop()


def message(subject: str = "Hello") -> EmailMessage:
    m = EmailMessage()
    m["Subject"] = subject
    m["From"] = "Holdspace <no-reply@holdspace.invalid>"
    m["To"] = "someone@example.org"
    m.set_content("body")
    return m


def email_channel(port: int) -> EmailChannel:
    return EmailChannel(NotificationsSettings(smtp_port=port, smtp_timeout_s=3))


async def test_email_is_delivered_to_the_envelope_recipient(sink: SmtpSink) -> None:
    sink.mode = "accept"
    await email_channel(sink.port).send(message("first"), "ann@example.org")
    got = sink.to("ann@example.org")
    assert [r.subject for r in got] == ["first"]


@pytest.mark.parametrize(
    ("mode", "address", "code", "temporary"),
    [
        ("tempfail", "tempfail@example.org", "smtp_451", True),
        ("reject", "reject@example.org", "smtp_550", False),
        ("accept", "bounce-1@example.org", "smtp_550", False),
    ],
)
async def test_smtp_replies_are_classified_by_code(
    sink: SmtpSink, mode: str, address: str, code: str, temporary: bool
) -> None:
    sink.mode = mode
    try:
        with pytest.raises(DeliveryFailure) as failure:
            await email_channel(sink.port).send(message(), address)
    finally:
        sink.mode = "accept"
    assert (failure.value.code, failure.value.temporary) == (code, temporary)
    assert address not in str(failure.value)
    assert sink.to(address) == []


async def test_an_unreachable_server_is_temporary_and_a_bad_address_permanent() -> None:
    with pytest.raises(DeliveryFailure) as down:
        await email_channel(free_port()).send(message(), "ann@example.org")
    assert (down.value.code, down.value.temporary) == ("smtp_unreachable", True)
    with pytest.raises(DeliveryFailure) as bad:
        await email_channel(free_port()).send(message(), "not an address")
    assert (bad.value.code, bad.value.temporary) == ("invalid_address", False)


async def test_chat_robot_gets_the_wecom_text_shape(robot: ChatRobot) -> None:
    chat = ChatChannel(NotificationsSettings(chat_webhook_url=robot.url))
    await chat.send("New sign-up to review")
    assert robot.posts[-1]["body"] == {
        "msgtype": "text",
        "text": {"content": "New sign-up to review"},
    }
    assert robot.posts[-1]["query"] == {"key": "test-robot-key"}


@pytest.mark.parametrize(
    ("status", "errcode", "code", "temporary"),
    [
        (200, 93000, "chat_errcode_93000", False),
        (200, 45009, "chat_errcode_45009", True),
        (500, 0, "chat_http_500", True),
        (404, 0, "chat_http_404", False),
    ],
)
async def test_chat_refusals_are_classified(
    robot: ChatRobot, status: int, errcode: int, code: str, temporary: bool
) -> None:
    robot.status, robot.errcode = status, errcode
    chat = ChatChannel(NotificationsSettings(chat_webhook_url=robot.url))
    with pytest.raises(DeliveryFailure) as failure:
        await chat.send("alert")
    assert (failure.value.code, failure.value.temporary) == (code, temporary)


async def test_chat_robot_down_is_temporary() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(DeliveryFailure) as failure:
        await ChatChannel(NotificationsSettings(chat_webhook_url=url)).send("alert")
    assert (failure.value.code, failure.value.temporary) == ("chat_unreachable", True)
