"""Pacing empty fetches for brokers that ignore the fetch wait time.

A Kafka broker holds a fetch for up to `fetch.max.wait.ms` when there is nothing new,
so an up-to-date consumer costs nothing. The embedded noida broker answers at once
instead, and aiokafka (under Faust) then sends the next fetch immediately: an idle
worker spins a whole core. `pace_empty_fetches` makes the consumer wait `seconds`
after a fetch that brought no records before asking that broker again, which is the
wait the broker should have done itself; a fetch that brings records is followed
by the next one at once, so throughput under load is unchanged.

It wraps one private aiokafka method, through `streams.faustcompat`, which checks at
start that the method is there with the parameters it was written for.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

from touchstream.streams import faustcompat

_PACED = "_touchstream_paced"


def pace_empty_fetches(seconds: float) -> None:
    if seconds <= 0 or getattr(Fetcher, _PACED, False):
        return
    faustcompat.check()
    original = faustcompat.fetch_request()

    @functools.wraps(original)
    async def paced(self: Fetcher, assignment: Any, node_id: int, request: Any) -> bool:
        got_records = bool(await original(self, assignment, node_id, request))
        if not got_records:
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                return False  # closing or reassigned: the result is of no interest, as upstream
        return got_records

    faustcompat.replace_fetch_request(paced)
    setattr(Fetcher, _PACED, True)
