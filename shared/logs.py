"""Structured logging: JSON in production, readable in development, never personal data.

Every log line passes :func:`redact_personal_fields`, which replaces the value of
any key that names personal data or a message body. Standard-library loggers
(uvicorn, aio-pika, aiormq, pymongo) are routed through the same processors, and
the libraries that are known to log message bodies are held at WARNING.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import IO, Any

import structlog

from shared.tracing import trace_ids

REDACTED = "[redacted]"

# Keys whose values are personal data or carry a message body. Matched on the
# lower-cased key, also as a suffix ("applicant_email").
PERSONAL_KEYS = frozenset(
    {
        "email",
        "name",
        "alias",
        "full_name",
        "typed_name",
        "chat_handle",
        "phone",
        "date_of_birth",
        "dob",
        "gender",
        "answers",
        "safety_answers",
        "reason",
        "body",
        "payload",
        "data",
        "message",
        "text",
        "html",
        "subject",
        "address",
        "ip",
        "user_agent",
        "token",
        "password",
        "authorization",
        "headers",
        "to",
        "recipient",
    }
)
# structlog's own keys that must survive redaction.
_KEEP = frozenset({"event", "level", "timestamp", "logger", "exc_info", "exception"})
# Libraries whose DEBUG/INFO lines include message bodies or headers.
_CHATTY = ("aiormq", "aio_pika", "pymongo", "aiosmtplib", "mail.log")


def _is_personal(key: str) -> bool:
    k = key.lower()
    if k in _KEEP:
        return False
    return k in PERSONAL_KEYS or any(k.endswith("_" + p) for p in PERSONAL_KEYS)


def redact_personal_fields(_logger: Any, _method: str, event_dict: dict) -> dict:
    for key in list(event_dict):
        if _is_personal(key):
            event_dict[key] = REDACTED
    return event_dict


# What personal data looks like inside free text (a traceback, an exception's message):
# an email address, a mainland mobile number, a bearer token, a pydantic input value.
_IN_TEXT = (
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "[redacted email]"),
    (re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)"), "[redacted phone]"),
    (re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+"), "[redacted token]"),
    (re.compile(r"input_value=('[^']*'|\"[^\"]*\"|[^,\]\n]*)"), "input_value=[redacted]"),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def redact_tracebacks(_logger: Any, _method: str, event_dict: dict) -> dict:
    """After format_exc_info: a traceback's text passes the same rules as free text
    (an exception's message can quote what a person typed)."""
    for key in ("exception", "event"):
        if isinstance(event_dict.get(key), str):
            event_dict[key] = redact_text(event_dict[key])
    return event_dict


def configure_logging(
    level: str = "INFO", fmt: str = "auto", production: bool = False, stream: IO[str] | None = None
) -> None:
    stream = stream or sys.stderr
    json_output = fmt == "json" or (fmt == "auto" and (production or not stream.isatty()))
    shared: list = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        trace_ids,
        redact_personal_fields,
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redact_tracebacks,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _drop_stdlib_args],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_tracebacks,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Access lines carry raw paths (a signing token can be one); the app logs the
    # route template instead.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def _drop_stdlib_args(_logger: Any, _method: str, event_dict: dict) -> dict:
    # A stdlib record's %-args can hold a message body (aiormq logs returned
    # messages with %r); the formatted text is in "event" already, so the args go.
    record = event_dict.get("_record")
    if record is not None and record.name.startswith(_CHATTY):
        event_dict["event"] = record.msg if isinstance(record.msg, str) else "library message"
    event_dict.pop("positional_args", None)
    return event_dict


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
