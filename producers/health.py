"""Readiness: what stops Touchstream from keeping what it acknowledges, each as one check.

A check is a call that returns None when all is well, or one line saying what is wrong.
The collector's and the worker's `/healthz` answer 503 with those lines while any check
fails, the collector refuses to acknowledge events while Kafka or the disk under the
embedded data cannot keep them, and the worker pauses its input while the disk is low.
Checks may block briefly (a metadata request), so callers run them off the event loop;
each caches its answer for a moment, so a busy health probe costs the broker nothing.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from confluent_kafka.admin import AdminClient

Check = Callable[[], str | None]


def problems(checks: Iterable[Check]) -> list[str]:
    """What the failing checks say, in order."""
    return [problem for check in checks if (problem := check()) is not None]


class _Cached:
    """A check's answer, computed at most once per `max_age` seconds (thread-safe)."""

    def __init__(self, compute: Callable[[], str | None], max_age: float) -> None:
        self._compute = compute
        self._max_age = max_age
        self._lock = threading.Lock()
        self._answer: tuple[float, str | None] | None = None

    def __call__(self) -> str | None:
        with self._lock:
            if self._answer is None or time.monotonic() - self._answer[0] >= self._max_age:
                self._answer = (time.monotonic(), self._compute())
            return self._answer[1]


class KafkaProbe(_Cached):
    """Kafka answers a metadata request within `timeout` seconds."""

    def __init__(self, bootstrap: str, *, timeout: float = 2.0, max_age: float = 2.0) -> None:
        super().__init__(self._probe, max_age)
        self.bootstrap = bootstrap
        self.timeout = timeout
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})

    def _probe(self) -> str | None:
        try:
            self._admin.list_topics(timeout=self.timeout)
        except Exception as error:  # librdkafka's KafkaException: the broker is gone or unreachable
            return f"Kafka at {self.bootstrap} does not answer: {error}"
        return None


class DiskSpace(_Cached):
    """The filesystem holding `path` has at least `min_free_bytes` free.

    The embedded broker acknowledges what it cannot write once its disk is full (measured:
    62,493 of 150,001 acknowledged events were gone after a restart), so Touchstream
    stops acknowledging before that: below the threshold the collector answers 503,
    `replay` and `ingest-email` stop, and the worker pauses its input.
    """

    def __init__(self, path: Path, min_free_bytes: int, *, max_age: float = 0.2) -> None:
        super().__init__(self._measure, max_age)
        self.path = path
        self.min_free_bytes = min_free_bytes

    def free_bytes(self) -> int:
        where = self.path
        while not where.exists() and where != where.parent:  # not created yet: its parent's disk
            where = where.parent
        return shutil.disk_usage(where).free

    def _measure(self) -> str | None:
        try:
            free = self.free_bytes()
        except OSError as error:
            return f"cannot tell the free space under {self.path}: {os.strerror(error.errno or 0)}"
        if free >= self.min_free_bytes:
            return None
        return (
            f"{_mib(free)} free under {self.path}, below the {_mib(self.min_free_bytes)} "
            "Touchstream keeps free (TOUCHSTREAM_MIN_FREE_DISK_MB); free space to go on"
        )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
