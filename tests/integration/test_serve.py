"""A service listens where its settings say (HTTP_HOST, HTTP_PORT) and nowhere else."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.services import ServiceProcess, service_env


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.timeout(120)
def test_a_service_binds_the_interface_its_settings_name(
    mongodb_url: str, rabbitmq_url: str, run_id: str, tmp_path
) -> None:
    env = service_env(mongodb_url, rabbitmq_url, run_id)
    consent = ServiceProcess("consent", env, tmp_path, host="127.0.0.2").start()
    try:
        assert httpx.get(f"http://127.0.0.2:{consent.port}/healthz", timeout=5).status_code == 200
        assert _refused("127.0.0.1", consent.port), "bound more than HTTP_HOST says"
    finally:
        consent.stop()
