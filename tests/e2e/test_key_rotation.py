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

from bson import json_util

from shared.settings import DEV_ENCRYPTION_KEY
from shared.topology import SERVICES
from tests.e2e.harness import System
from tests.e2e.journey import Journey
from tests.e2e.test_erasure import SECRETS, every_secret_stored, what_coordinators_see

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


async def test_a_rotated_key_leaves_live_data_readable_and_the_old_key_unneeded(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "rotation")
    a, request = await every_secret_stored(journey)
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

    for service in ("registration", "payments", "notifications"):
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
