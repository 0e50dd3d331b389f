"""Every port of `touchstream up` holds up: a flood of idle connections against the
collector, with the descriptor limit at a common 1,024, costs the collector alone; the
worker's control port answers only its own loopback `Host`, and Faust's views are off."""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_up import Up, cli_env
from touchstream.process import wait_until

DESCRIPTORS = 1024
FLOOD = 1100
IDLE_SECONDS = 3


def printed_port(up: Up, service: str) -> int:
    found = re.search(rf"^{service} +http://127\.0\.0\.1:(\d+)", up.output(), re.M)
    assert found is not None, f"up printed no {service} port:\n{up.output()}"
    return int(found[1])


def get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    headers = {"Host": host} if host else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def held_open(sock: socket.socket) -> bool:
    """Whether the server still holds `sock` open (it answered nothing and did not close)."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # the 503 of a refused one, or b"" once closed
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


@pytest.fixture
def up_with_few_descriptors(tmp_path: Path) -> Iterator[Up]:
    env = {
        **cli_env(),
        "TOUCHSTREAM_DASHBOARD_PORT": "0",
        "TOUCHSTREAM_LISTENER_IDLE_SECONDS": str(IDLE_SECONDS),
    }
    up = Up(tmp_path / "d", env=env, descriptors=DESCRIPTORS)
    try:
        up.wait_ready()
        yield up
    finally:
        if up.process.poll() is None:
            up.interrupt()


def test_a_connection_flood_on_the_collector_costs_the_collector_alone(up_with_few_descriptors: Up) -> None:
    up = up_with_few_descriptors
    collector, worker = printed_port(up, "collector"), printed_port(up, "worker")
    dashboard, clickhouse = printed_port(up, "dashboard"), printed_port(up, "clickhouse ")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * FLOOD)), hard))
    flood: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            flood.append(socket.create_connection(("127.0.0.1", collector), timeout=10))
        time.sleep(0.5)
        held = sum(held_open(sock) for sock in flood)
        assert 16 <= held < FLOOD - 100, f"the collector held {held} of {FLOOD} idle connections"
        # Every other port, and the pipeline behind them, still answers.
        assert get(worker, "/healthz")[0] == 200
        assert get(dashboard, "/")[0] == 200
        assert get(clickhouse, "/ping") == (200, b"Ok.\n")
        assert up.count() >= 0
        # The idle connections are closed after the idle bound; the collector answers again.
        wait_until(lambda: not any(held_open(sock) for sock in flood), timeout=IDLE_SECONDS + 20,
                   what="the idle connections to be closed")  # fmt: skip
        assert get(collector, "/healthz")[0] == 200
    finally:
        for sock in flood:
            with contextlib.suppress(OSError):
                sock.close()
    assert up.interrupt() == 0, up.output()


def test_the_worker_port_answers_only_its_own_host_and_serves_no_faust_views(tmp_path: Path) -> None:
    up = Up(tmp_path / "d", env={**cli_env(), "TOUCHSTREAM_DASHBOARD_PORT": "0"})
    try:
        up.wait_ready()
        worker = printed_port(up, "worker")
        status, body = get(worker, "/status")
        assert status == 200 and json.loads(body)["pid"] == up.process.pid
        for path in ("/status", "/metrics", "/healthz"):
            assert get(worker, path, host=f"rebound.example:{worker}")[0] == 403, path
            assert get(worker, path, host=f"127.0.0.1:{worker + 1}")[0] == 403, path
        for path in ("/table/", "/router/", "/graph/", "/stats/", "/"):
            assert get(worker, path)[0] in (403, 404), path
    finally:
        assert up.interrupt() == 0, up.output()
