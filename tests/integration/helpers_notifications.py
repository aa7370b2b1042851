"""Test doubles that are real servers: an SMTP sink (aiosmtpd) with failure modes, and a
chat robot webhook (aiohttp) that records what it is sent. Nothing here is a mock: the
notifications service talks to them over TCP exactly as it would to the real ones.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

from shared.devinfra import free_port


@dataclass
class Received:
    rcpt_tos: list[str]
    message: EmailMessage
    at: float = field(default_factory=time.monotonic)  # when the sink accepted it

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def template(self) -> str:
        return str(self.message["X-Holdspace-Template"])

    def part(self, content_type: str) -> Any:
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                return part.get_content()
        return None

    @property
    def text(self) -> str:
        return self.part("text/plain") or ""

    @property
    def html(self) -> str:
        return self.part("text/html") or ""

    @property
    def preview(self) -> str:
        """What a phone shows under the subject: the start of the plain text."""
        return self.text.strip().splitlines()[0] if self.text.strip() else ""


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        s = self.sink
        with s.lock:
            s.rcpt_attempts[address] += 1
            local = address.split("@")[0]
            if address in s.allowed:
                pass
            elif s.mode == "tempfail":
                return "451 4.3.0 Try again later"
            elif s.mode == "reject" or local.startswith("bounce"):
                return "550 5.1.1 No such user here"
            elif local.startswith("greylist") and s.rcpt_attempts[address] <= 2:
                return "451 4.7.1 Greylisted, try again"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.sink.lock:
            self.sink.received.append(Received(list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted"


class SmtpSink:
    """An aiosmtpd server in a thread. ``mode``: "accept", "tempfail" (451 to every
    recipient) or "reject" (550); addresses starting "bounce" are always refused with
    550, those starting "greylist" get 451 twice before they are accepted."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.mode = "accept"
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.rcpt_attempts: Counter[str] = Counter()
        self.allowed: set[str] = set()  # accepted whatever the mode or prefix
        self._controller: Controller | None = None

    def start(self) -> SmtpSink:
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, server_hostname="sink.test"
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if address in r.rcpt_tos]


@dataclass
class ChatRobot:
    """A WeCom-style group robot: answers {"errcode": 0, "errmsg": "ok"} or ``errcode``."""

    port: int = field(default_factory=free_port)
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    errcode: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin/webhook/send?key=test-robot-key"

    async def start(self) -> ChatRobot:
        async def send(request: web.Request) -> web.Response:
            body = await request.json()
            self.posts.append({"at": datetime.now(UTC), "body": body, "query": dict(request.query)})
            if self.status != 200:
                return web.json_response({"errcode": -1}, status=self.status)
            return web.json_response({"errcode": self.errcode, "errmsg": "ok"})

        app = web.Application()
        app.router.add_post("/cgi-bin/webhook/send", send)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def texts(self) -> list[str]:
        return [p["body"]["text"]["content"] for p in self.posts]
