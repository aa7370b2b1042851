"""A development SMTP sink: every message it receives becomes a file, nothing is relayed.

Run it on its own::

    python -m shared.mailsink --host 127.0.0.1 --port 1025 --dir var/mail

Each message is saved as ``<dir>/<UTC timestamp>-<n>.eml`` (``n`` counts messages since
the sink started), with Unix line endings and two headers added at the top:
``X-Envelope-From`` and ``X-Envelope-To``, the SMTP envelope (which shows Bcc
recipients the headers do not). The log says only "message saved" with the file name
and size: no addresses, no subject, no body. aiosmtpd's own logger, which logs
envelope addresses at INFO, is kept at WARNING.

Tests use :class:`MailSink` (a sink on a free port in a background thread) and
:func:`read_messages`.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import itertools
import logging
import os
import signal
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

log = structlog.get_logger("mailsink")

SERVER_HOSTNAME = "holdspace-mailsink"  # EHLO name; avoids a slow getfqdn() lookup
DATA_SIZE_LIMIT = 10 * 1024 * 1024


def _quiet_aiosmtpd() -> None:
    # aiosmtpd logs "sender: <address>" and "recip: <address>" at INFO.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


class MailboxHandler:
    """aiosmtpd handler: saves each message under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._counter = itertools.count(1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        n = next(self._counter)  # taken on the loop thread: no two saves share a number
        try:
            path = await asyncio.to_thread(
                self.save,
                envelope.original_content or b"",
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                n,
            )
        except OSError as exc:
            log.error("message not saved", error=type(exc).__name__)
            return "451 Requested action aborted: could not store the message"
        log.info("message saved", file=path.name, bytes=path.stat().st_size)
        return "250 Message accepted for delivery"

    def save(self, content: bytes, mail_from: str, rcpt_tos: list[str], n: int) -> Path:
        """Write one message; the file appears complete or not at all."""
        self.directory.mkdir(parents=True, exist_ok=True)
        envelope = (
            f"X-Envelope-From: <{mail_from}>\r\n"
            f"X-Envelope-To: {', '.join(f'<{r}>' for r in rcpt_tos)}\r\n"
        ).encode("utf-8", "surrogateescape")
        data = (envelope + content).replace(b"\r\n", b"\n")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        tmp = self.directory / f".{stamp}-{n}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        while True:
            path = self.directory / f"{stamp}-{n}.eml"
            try:
                os.link(tmp, path)  # never replaces an existing message
                break
            except FileExistsError:  # a restarted sink, same microsecond and number
                stamp += "x"
        tmp.unlink()
        return path


def _sort_key(path: Path) -> tuple[str, int]:
    stamp, _, n = path.stem.rpartition("-")
    return (stamp, int(n) if n.isdigit() else 0)


def message_files(directory: Path) -> list[Path]:
    """The saved messages in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.eml"), key=_sort_key)


def read_messages(directory: Path) -> list[EmailMessage]:
    """The saved messages in ``directory``, oldest first, parsed."""
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in message_files(directory)
    ]


class MailSink:
    """A sink in a background thread, for tests: ``with MailSink(tmp_path) as sink:``,
    send to ``("127.0.0.1", sink.port)``, then ``sink.wait_for(1)`` returns the messages
    as :class:`email.message.EmailMessage` (``port=0`` picks a free port).
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self._controller: Controller | None = None

    def start(self) -> MailSink:
        from shared.devinfra import free_port

        _quiet_aiosmtpd()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._controller = Controller(
            MailboxHandler(self.directory),
            hostname=self.host,
            port=self.port,
            server_hostname=SERVER_HOSTNAME,
            data_size_limit=DATA_SIZE_LIMIT,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def files(self) -> list[Path]:
        return message_files(self.directory)

    def messages(self) -> list[EmailMessage]:
        return read_messages(self.directory)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[EmailMessage]:
        """Wait until at least ``count`` messages are saved; returns all of them."""
        deadline = time.monotonic() + timeout_s
        while len(self.files()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.files())} of {count} messages after {timeout_s}s")
            time.sleep(0.05)
        return self.messages()


async def serve(host: str, port: int, directory: Path) -> None:
    """Run the sink until SIGINT or SIGTERM (``directory`` is created on first save)."""
    handler = MailboxHandler(directory)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname=SERVER_HOSTNAME,
            data_size_limit=DATA_SIZE_LIMIT,
            enable_SMTPUTF8=True,
        ),
        host,
        port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("mail sink listening", listen=f"{host}:{port}", directory=str(directory))
    await stop.wait()
    server.close()
    await server.wait_closed()
    log.info("mail sink stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shared.mailsink",
        description="Development SMTP sink: saves every message as a .eml file.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1025, help="port (default 1025)")
    parser.add_argument("--dir", default="var/mail", type=Path, help="where messages go")
    args = parser.parse_args(argv)

    from shared.logs import configure_logging

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), os.environ.get("LOG_FORMAT", "auto"))
    _quiet_aiosmtpd()
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.host, args.port, args.dir))


if __name__ == "__main__":
    main()
