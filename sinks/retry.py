"""Retry policy for sink writes: back off while ClickHouse is unavailable, stop on what a
retry cannot fix. The input pauses while a write is retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from touchstream.schemas.errors import ClickHouseError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    first_seconds: float = 0.2
    factor: float = 2.0
    max_seconds: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        return float(min(self.max_seconds, self.first_seconds * self.factor ** (attempt - 1)))


async def until_written(
    write: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[ClickHouseError], None] = lambda _error: None,
) -> T:
    """Await `write()` until it succeeds, backing off between transient ClickHouse
    failures (a connection, a timeout, too many parts, memory: `ClickHouseError.transient`),
    with a log line per attempt.

    A permanent error (an unknown table or column, a type mismatch, a syntax error,
    authentication) is raised at once: retrying would stall the worker forever, so the
    caller stops it, without committing the batch. Giving up on a transient error would
    mean dropping the batch or committing offsets past it, so those are retried until
    success or cancellation (shutdown). `on_retry` is told of each failure retried.
    """
    attempt = 0
    while True:
        try:
            return await write()
        except ClickHouseError as error:
            if not error.transient:
                raise
            attempt += 1
            on_retry(error)
            delay = backoff.delay(attempt)
            log.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, error)
            await sleep(delay)
