"""One canary for the whole suite (matrix row 26).

Every applicant the suite signs up through the services' HTTP API carries it in their
name (tests/integration/registration_api.py, the journeys, the fault tests), so it
travels through every service, the broker, the databases and the e-mails. A name is
personal: no log line, and no span, may ever hold it. At the end of the session the
fixture in tests/conftest.py reads every log this session's processes wrote (services,
brokers, proxies, the database) and every trace file (TRACE_FILE, JSON lines of spans),
and fails the run on any hit.
"""

from __future__ import annotations

from pathlib import Path

CANARY = "Canary-9c4e"


# Logs (.log, .out) and the services' span files (.jsonl).
WRITTEN = (".log", ".out", ".jsonl")


def in_logs(root: Path) -> dict[str, int]:
    """Log and trace files under ``root`` that hold the canary, with how many lines do."""
    hits: dict[str, int] = {}
    for path in root.rglob("*"):
        if not path.is_file() or path.suffix not in WRITTEN:
            continue
        with open(path, errors="replace") as lines:
            count = sum(1 for line in lines if CANARY in line)
        if count:
            hits[str(path.relative_to(root))] = count
    return hits
