"""A three-node RabbitMQ cluster on this machine, and a real network partition of one node.

Each node is Debian's RabbitMQ run as its own Erlang node on its own loopback address
(127.0.0.2, .3, .4: all of 127/8 is the loopback device on Linux), with its AMQP,
management and distribution ports there, and its outgoing distribution connections bound
to that address too. So a node can be cut off from the other two by address with
iptables, in both directions, while clients on 127.0.0.1 still reach every node, as in
a real partition. The rules live in a chain of this cluster's own (removed on heal and
on close); nothing else on the machine is touched.

The cluster is configured as RabbitMQ recommends for three nodes: ``pause_minority`` (the
node that finds itself alone stops its listeners until it can see a majority again),
quorum-queue leaders spread over the nodes (``queue_leader_locator = balanced``), and a
10 s ``net_ticktime`` so a partition is noticed within a test's patience (the default,
60 s, would let a 30 s partition go unseen by Erlang; quorum queues notice sooner).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared import devinfra

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
CHAIN_PREFIX = "HS-PART-"


class ClusterUnavailable(RuntimeError):
    """What this machine lacks to run the cluster (said plainly, so the test says why)."""


@dataclass
class Node:
    index: int
    name: str
    address: str
    amqp_port: int
    management_port: int
    dist_port: int
    base: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.address}:{self.amqp_port}/?heartbeat=5"

    @property
    def management_url(self) -> str:
        return f"http://{self.address}:{self.management_port}"


def _need(tool: str) -> str:
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not found:
        raise ClusterUnavailable(f"{tool} is not installed (scripts/ensure-cluster-tools)")
    return found


class RabbitCluster:
    """Three clustered nodes; :meth:`partition` cuts one off, :meth:`heal` joins it back."""

    def __init__(self, work_dir: Path, tag: str) -> None:
        if os.geteuid() != 0:
            raise ClusterUnavailable("partitioning needs iptables, that is root")
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise ClusterUnavailable("Debian's rabbitmq-server is not installed")
        self.iptables = _need("iptables")
        self.dir = work_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(f"holdspace-cluster-{tag}")
        cookie.chmod(0o400)
        self.chain = f"{CHAIN_PREFIX}{tag}"[:28]
        self.nodes = [
            Node(
                index=n,
                name=f"hs{n}-{tag}@127.0.0.{n + 2}",
                address=f"127.0.0.{n + 2}",
                amqp_port=devinfra.free_port(),
                management_port=devinfra.free_port(),
                dist_port=devinfra.free_port(),
                base=self.dir / f"node{n}",
            )
            for n in range(3)
        ]
        self.partitioned: Node | None = None

    # --- life ------------------------------------------------------------------------

    def start(self, timeout_s: float = 180.0) -> RabbitCluster:
        for node in self.nodes:
            self._launch(node)
        for node in self.nodes:
            self._await_startup(node, time.monotonic() + timeout_s)
        for node in self.nodes[1:]:
            self._ctl(node, "stop_app")
            self._ctl(node, "join_cluster", self.nodes[0].name)
            self._ctl(node, "start_app", timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while len(self.running_nodes(self.nodes[0])) < 3:
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster did not form: {self.log_tail()}")
            time.sleep(1)
        return self

    def _await_startup(self, node: Node, deadline: float) -> None:
        """``await_startup`` fails at once until the node has registered with epmd."""
        while True:
            try:
                self._ctl(node, "await_startup", timeout=max(1.0, deadline - time.monotonic()))
                return
            except AssertionError as not_yet:
                assert node.process is not None
                if node.process.poll() is not None or time.monotonic() > deadline:
                    why = f"{node.name} did not start: {self.log_tail()}"
                    raise AssertionError(why) from not_yet
                time.sleep(1)

    def close(self) -> None:
        self.heal()
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGKILL)  # our own process group
                node.process.wait(timeout=30)

    def _launch(self, node: Node) -> None:
        node.base.mkdir(parents=True, exist_ok=True)
        config = node.base / "rabbitmq.conf"
        config.write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = {node.address}:{node.amqp_port}",
                    f"management.tcp.ip = {node.address}",
                    f"management.tcp.port = {node.management_port}",
                    "loopback_users = none",
                    "cluster_partition_handling = pause_minority",
                    "queue_leader_locator = balanced",
                    "net_ticktime = 10",
                    "",
                ]
            )
        )
        plugins = node.base / "enabled_plugins"
        plugins.write_text("[rabbitmq_management].\n")
        ip = "{" + node.address.replace(".", ",") + "}"
        env = {
            **self._cli_env(),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.base / "log"),
            "RABBITMQ_PID_FILE": str(node.base / "pid"),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                f"-kernel inet_dist_use_interface {ip} "
                f"-kernel inet_dist_connect_options [{{ip,{ip}}}]"
            ),
        }
        with open(node.base / "server.out", "ab") as out:
            node.process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _cli_env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.dir), "RABBITMQ_USE_LONGNAME": "true"}

    def _ctl(self, node: Node, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", node.name, *args],
            env=self._cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout + 10,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} on {node.name}: {done.stderr}")
        return done.stdout

    # --- what the cluster says ----------------------------------------------------------

    def api(self, node: Node, path: str) -> list | dict:
        answer = httpx.get(f"{node.management_url}/api/{path}", auth=("guest", "guest"), timeout=10)
        answer.raise_for_status()
        return answer.json()

    def running_nodes(self, seen_from: Node) -> set[str]:
        try:
            nodes = self.api(seen_from, "nodes")
        except httpx.HTTPError:
            return set()
        return {n["name"] for n in nodes if n.get("running")}  # type: ignore[union-attr]

    def accepts_amqp(self, node: Node) -> bool:
        try:
            devinfra.wait_for_port(node.amqp_port, timeout_s=0.5, host=node.address)
        except Exception:
            return False
        return True

    def leaders(self, seen_from: Node) -> dict[str, str]:
        """Queue name -> the node its quorum-queue leader is on."""
        queues = self.api(seen_from, "queues")
        return {q["name"]: q.get("leader", q.get("node")) for q in queues}  # type: ignore[union-attr]

    def log_tail(self, lines: int = 30) -> str:
        tails = []
        for node in self.nodes:
            for log in sorted((node.base / "log").glob("*.log")):
                tails.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-lines:]))
        return "\n".join(tails)

    # --- the fault ------------------------------------------------------------------------

    def partition(self, node: Node) -> None:
        """Drop every packet between ``node`` and the other nodes, both ways."""
        assert self.partitioned is None, "one partition at a time"
        self._iptables("-N", self.chain)
        for other in self.nodes:
            if other is node:
                continue
            for src, dst in ((node, other), (other, node)):
                self._iptables("-A", self.chain, "-s", src.address, "-d", dst.address, "-j", "DROP")
        self._iptables("-I", "INPUT", "-j", self.chain)
        self.partitioned = node

    def heal(self) -> None:
        if self.partitioned is None:
            return
        self._iptables("-D", "INPUT", "-j", self.chain, check=False)
        self._iptables("-F", self.chain, check=False)
        self._iptables("-X", self.chain, check=False)
        self.partitioned = None

    def _iptables(self, *args: str, check: bool = True) -> None:
        done = subprocess.run(
            [self.iptables, "-w", "10", *args], capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"iptables {' '.join(args)}: {done.stderr}")
