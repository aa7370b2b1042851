"""The benchmark's process meter and machine description (this process only)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from holdspace_bench import machine


async def test_meter_counts_cpu_and_peak_memory_of_a_tracked_process() -> None:
    meter = machine.ProcessMeter(interval_s=0.05)
    meter.track("me", os.getpid())
    meter.track("nobody", None)  # an absent process is simply not tracked
    meter.start_phase()
    ballast = bytearray(64 * 2**20)  # 64 MiB, touched so it is resident
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn 0.3 s of CPU
        pass
    await asyncio.sleep(0.15)  # let the sampler see the ballast
    usage = await meter.end_phase()
    assert set(usage.cpu_s) == {"me"}
    assert usage.cpu_s["me"] >= 0.25
    assert usage.peak_rss_mib["me"] >= 64
    assert usage.wall_s >= 0.3
    assert usage.machine_busy_s >= usage.cpu_s["me"] * 0.5
    share = usage.foreign_cpu_share
    assert share is not None and 0.0 <= share <= 1.0
    d = usage.to_dict()
    assert d["cpu_s"]["me"] == round(usage.cpu_s["me"], 3)
    del ballast


def test_machine_description_names_versions_and_load() -> None:
    repo = Path(__file__).resolve().parents[2]
    d = machine.describe(repo)
    assert d["logical_cores"] >= 1 and d["memory_gib"] > 0
    assert d["packages"]["aio-pika"] == "10.2.1"
    assert d["packages"]["psutil"] != "not installed"
    assert d["git"] != ""
    load = machine.loadavg()
    assert len(load) == 3 and all(x >= 0 for x in load)
