"""docs/subscribing.md, followed as an outside system's operator and developer would:
its rabbitmqctl commands make the user, its example consumer receives the public
enrollment events, once each, and nothing it may not read.

The commands run as written, with two substitutions so a run touches nothing else:
the user name (``acme``, a global name on the broker) and the vhost (``/``)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import devinfra
from shared import events as ev
from shared.messaging import build_message
from tests.integration.test_broker_access import (  # noqa: F401 (fixtures)
    admin_channel,
    amqp_url,
    declare_topology,
    run_id,
    vhost,
)

DOC = devinfra.REPO_ROOT / "docs" / "subscribing.md"


def block(after: str, language: str) -> str:
    """The first ``language`` code block in the doc after the line ``after``."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(after)
    match = re.search(rf"```{language}\n(.*?)```", text[start:], re.S)
    assert match, f"no {language} block after {after!r} in {DOC}"
    return match.group(1)


def create_user(name: str, on_vhost: str) -> str:
    script = block("### Creating the user", "sh").replace("acme", name)
    script = script.replace("-p / ", f"-p '{on_vhost}' ")
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    password = done.stdout.splitlines()[0].strip()
    assert re.fullmatch(r"[0-9a-f]{48}", password), "the first line should print the password"
    return password


@pytest.fixture
def subscriber_name(run_id: str) -> Iterator[str]:  # noqa: F811
    name = f"t{run_id}-acme"
    yield name
    try:
        devinfra.rabbitmqctl("delete_user", name)
    except Exception:
        pass


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "subscriber.py"
    path.write_text(block("run it with `HOLDSPACE_AMQP_URL` set", "python"), encoding="utf-8")
    return path


def enrollment(event_type: type[ev.EnrollmentEvent], registration_id: str, **extra) -> ev.Envelope:
    data = event_type(
        registration_id=registration_id,
        cohort_id="coh_doc",
        program_id="prg_doc",
        occurred_at="2026-12-01T09:30:00Z",
        **extra,
    )
    return ev.about_registration(data, registration_id, source="registration")


def printed(output: Path) -> str:
    return output.read_text(encoding="utf-8")


async def wait_for_lines(output: Path, count: int, deadline_s: float = 30) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while loop.time() < deadline:
        lines = [line for line in printed(output).splitlines() if line.startswith("enrollment.")]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.2)
    raise AssertionError(f"the example printed: {printed(output)!r}")


async def test_the_documented_user_and_example_receive_each_enrollment_once(
    vhost: str,  # noqa: F811
    subscriber_name: str,
    example: Path,
    admin_channel,  # noqa: F811
    tmp_path: Path,
) -> None:
    await declare_topology(vhost, "holdspace.")
    password = create_user(subscriber_name, vhost)
    output = tmp_path / "subscriber.out"
    with output.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(example),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOLDSPACE_AMQP_URL": amqp_url(subscriber_name, password, vhost)},
        )
    try:
        queue = f"{subscriber_name}.enrollments"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            listed = devinfra.rabbitmqctl("list_queues", "-p", vhost, "name").stdout
            if queue in listed.split():
                break
            assert process.returncode is None, printed(output)
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the example declared no queue: {printed(output)!r}")
        public = await admin_channel.get_exchange("holdspace.public")
        confirmed = enrollment(ev.EnrollmentConfirmed, "reg_doc_1")
        waitlisted = enrollment(ev.EnrollmentWaitlisted, "reg_doc_2", position=1)
        for envelope in (confirmed, confirmed, waitlisted):  # the same event twice
            await public.publish(build_message(envelope), routing_key=envelope.type)
        await wait_for_lines(output, 2)
        await asyncio.sleep(1)  # a second copy of the first would have been printed by now
        lines = await wait_for_lines(output, 2)
        assert lines == [
            "enrollment.confirmed reg_doc_1 coh_doc",
            "enrollment.waitlisted reg_doc_2 coh_doc",
        ]
        assert f"correlation id {confirmed.correlationid}" in printed(output)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
