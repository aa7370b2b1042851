"""A key rotation with live data: ENCRYPTION_KEY changes, ``python -m <service> reseal``
re-seals what the old key sealed, and the old key can go.

One applicant's data is in every service (contact, safety answers, the signing link
in an outbox, a signature's typed name and user agent, a payment note, the sealed
deliveries). The services stop; each service's reseal runs with the new key and the
old one retired; registration, payments and notifications start again without the
old key at all, and coordinators still read everything. Consent keeps its signatures'
fields under the old key (the chain's digests cover the sealed bytes), and says so.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from datetime import UTC, datetime

from bson import json_util

from shared import events as ev
from shared.security import Role
from shared.settings import DEV_ENCRYPTION_KEY
from shared.topology import SERVICES
from tests.e2e.harness import System
from tests.e2e.journey import Journey
from tests.e2e.test_erasure import SECRETS, every_secret_stored, what_coordinators_see
from tests.integration.helpers_messaging import eventually
from tests.services import coordinator_headers

OLD_ID = "dev1"  # the development key's id (shared/settings.py)
NEW_ID = "rotated2"
NEW_KEY = base64.b64encode(b"a-new-key-for-the-rotation-test!").decode()
SEALED_UNDER = re.compile(r'"v1\.([\w-]+)\.[\w-]+\.[\w-]+"')


async def key_ids_in(system: System, service: str) -> dict[str, dict[str, int]]:
    """Per collection, how many sealed values each key id sealed."""
    found: dict[str, dict[str, int]] = {}
    db = system.db(service)
    for name in await db.list_collection_names():
        text = json_util.dumps(await db[name].find().to_list())
        for key_id in SEALED_UNDER.findall(text):
            counts = found.setdefault(name, {})
            counts[key_id] = counts.get(key_id, 0) + 1
    return found


def reseal(system: System, service: str) -> subprocess.CompletedProcess:
    env = {
        **system.env,
        "ENCRYPTION_KEY": NEW_KEY,
        "ENCRYPTION_KEY_ID": NEW_ID,
        "ENCRYPTION_RETIRED_KEYS": f"{OLD_ID}:{DEV_ENCRYPTION_KEY}",
    }
    return subprocess.run(
        [sys.executable, "-m", service, "reseal"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


NOTE = "A note between sessions 4417"


def pages(a) -> dict[str, str]:
    return coordinator_headers(Role.pages, subject=f"applicant:{a.registration_id}")


async def a_journal_note(system: System, journey: Journey, a) -> None:
    """Their space between sessions opened (as enrollment.confirmed would) with a note."""
    await system.inject_event(
        "progress",
        ev.EnrollmentConfirmed(
            registration_id=a.registration_id,
            cohort_id=journey.cohort_id,
            program_id=journey.program_id,
            occurred_at=datetime.now(UTC),
        ),
    )
    url = f"{system.url('progress')}/spaces/{a.registration_id}"

    async def noted():
        r = await journey.request(
            "PUT", f"{url}/homework/1", headers=pages(a), json={"done": True, "journal": NOTE}
        )
        assert r.status_code == 200, r.text
        return r

    await eventually(noted, timeout=30, what="the space opened and the note kept")


async def test_a_rotated_key_leaves_live_data_readable_and_the_old_key_unneeded(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "rotation")
    a, request = await every_secret_stored(journey)
    await a_journal_note(system, journey, a)
    for service in SERVICES:
        assert OLD_ID in str(await key_ids_in(system, service)), f"{service} sealed nothing"

    system.stop_processes()
    for service in SERVICES:
        done = reseal(system, service)
        assert done.returncode == 0, done.stdout + done.stderr[-2000:]
        assert f"re-sealed under key {NEW_ID!r}" in done.stdout, done.stdout
        again = reseal(system, service)  # a second run finds nothing left to do
        assert again.returncode == 0 and " 0 re-sealed" in again.stdout, again.stdout
        assert not re.search(r" [1-9]\d* re-sealed", again.stdout), again.stdout

    for service in ("registration", "payments", "notifications", "progress"):
        assert OLD_ID not in str(await key_ids_in(system, service)), service
    consent = await key_ids_in(system, "consent")
    assert consent["signatures"].get(OLD_ID), consent  # kept, on purpose
    assert all(OLD_ID not in counts for name, counts in consent.items() if name != "signatures")
    kept = reseal(system, "consent").stdout
    assert "kept under their key" in kept and "keep the retired keys" in kept, kept

    # The old key gone from three services (consent keeps it for the signatures).
    for service, processes in system.processes.items():
        retired = f"{OLD_ID}:{DEV_ENCRYPTION_KEY}" if service == "consent" else ""
        for p in processes:
            p.env = {
                **system.env,
                "ENCRYPTION_KEY": NEW_KEY,
                "ENCRYPTION_KEY_ID": NEW_ID,
                "ENCRYPTION_RETIRED_KEYS": retired,
            }
            p.start()
    after = await what_coordinators_see(journey, a, request["payment_id"])
    for field, secret in SECRETS.items():
        assert secret in after, f"the {field} does not open after the rotation"
    space = await eventually(
        lambda: journey.request(
            "GET", f"{system.url('progress')}/spaces/{a.registration_id}", headers=pages(a)
        ),
        timeout=30,
        what="progress answering again",
    )
    assert NOTE in space.text, "the journal note does not open after the rotation"
