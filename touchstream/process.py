"""A `touchstream worker` child process, and how to reach the chDB it owns.

Used by the integration tests and the benchmarks, which run the worker exactly as an
operator would: as its own process, configured by environment, reached over its
control endpoint (chDB allows one owner per directory).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from touchstream.control import ControlInfo, read_info, remote_sql


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, every: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class WorkerProcess:
    def __init__(self, env: dict[str, str], data_dir: Path, log: Path) -> None:
        self.env = env
        self.data_dir = data_dir
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "touchstream.cli", "worker"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        wait_until(self._ready, timeout=timeout, what=f"worker to start (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited: {self.log_path.read_text()[-2000:]}")
        info = read_info(self.data_dir)
        return info is not None and info.pid == self.process.pid

    @property
    def control(self) -> ControlInfo:
        info = read_info(self.data_dir)
        assert info is not None, "worker is not running"
        return info

    def sql(self, query: str) -> list[list[str]]:
        output = remote_sql(self.control, query, "TSV").decode()
        return [line.split("\t") for line in output.splitlines()]

    def scalar(self, query: str) -> int:
        return int(self.sql(query)[0][0])

    def status(self) -> dict[str, Any]:
        """The worker's counters (GET /status)."""
        with urllib.request.urlopen(f"{self.control.url}/status", timeout=10) as response:
            return dict(json.loads(response.read()))

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
