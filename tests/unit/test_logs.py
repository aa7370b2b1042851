import io
import json
import logging

import pytest
import structlog

from shared.logs import REDACTED, configure_logging, get_logger, redact_personal_fields

CANARY_EMAIL = "canary.applicant@example.org"
CANARY_ANSWER = "canary-safety-answer-7f3a"


def test_personal_keys_are_redacted_and_ids_are_kept() -> None:
    out = redact_personal_fields(
        None,
        "info",
        {
            "event": "sign-up stored",
            "email": CANARY_EMAIL,
            "applicant_email": CANARY_EMAIL,
            "answers": {"q1": CANARY_ANSWER},
            "body": b"{...}",
            "registration_id": "r-1",
            "event_id": "e-1",
        },
    )
    assert out["email"] == out["applicant_email"] == out["answers"] == out["body"] == REDACTED
    assert out["registration_id"] == "r-1" and out["event_id"] == "e-1"
    assert out["event"] == "sign-up stored"


class Lines(io.StringIO):
    def lines(self) -> list[str]:
        return self.getvalue().strip().splitlines()


@pytest.fixture
def json_logs():
    out = Lines()
    configure_logging(level="DEBUG", fmt="json", stream=out)
    yield out
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


def test_structlog_lines_are_json_without_personal_data(json_logs) -> None:
    structlog.contextvars.bind_contextvars(correlation_id="corr-1")
    get_logger("t").info("registration stored", email=CANARY_EMAIL, registration_id="r-1")
    structlog.contextvars.clear_contextvars()
    line = json.loads(json_logs.lines()[-1])
    assert line["registration_id"] == "r-1" and line["correlation_id"] == "corr-1"
    assert line["email"] == REDACTED
    assert CANARY_EMAIL not in json.dumps(line)


def test_chatty_library_loggers_are_held_at_warning(json_logs) -> None:
    # aiormq logs returned messages with their bodies at DEBUG/INFO.
    logging.getLogger("aiormq.connection").info("returned %r", {"email": CANARY_EMAIL})
    assert CANARY_EMAIL not in json_logs.getvalue()


def test_a_traceback_quoting_personal_data_is_redacted_but_keeps_its_shape(json_logs) -> None:
    from pydantic import BaseModel, EmailStr, ValidationError

    class Form(BaseModel):
        email: EmailStr

    try:
        raise LookupError(f"no registration for {CANARY_EMAIL}, phone 13812345678")
    except LookupError:
        get_logger("t").exception("handler failed", registration_id="r-1")
    try:
        Form(email="not-an-email " + CANARY_ANSWER)
    except ValidationError:
        logging.getLogger("uvicorn.error").exception("request failed")
    text = json_logs.getvalue()
    assert CANARY_EMAIL not in text and "13812345678" not in text and CANARY_ANSWER not in text
    first, second = (json.loads(line) for line in json_logs.lines()[-2:])
    assert "LookupError: no registration for [redacted email]" in first["exception"]
    assert "Traceback" in first["exception"] and first["registration_id"] == "r-1"
    assert "ValidationError" in second["exception"]
