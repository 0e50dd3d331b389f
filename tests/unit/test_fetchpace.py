"""The empty-fetch pacing wraps aiokafka's fetch handler: sleeps after empty fetches only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher

from touchstream.streams import fetchpace


def test_sleeps_after_empty_fetches_only(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([False, True])

    async def handler(self: Any, assignment: Any, node_id: int, request: Any) -> bool:
        return next(answers)

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(Fetcher, "_proc_fetch_request", handler)
    monkeypatch.delattr(Fetcher, fetchpace._PACED, raising=False)
    monkeypatch.setattr(fetchpace.asyncio, "sleep", sleep)
    fetchpace.pace_empty_fetches(0.1)
    paced = Fetcher._proc_fetch_request

    assert asyncio.run(paced(None, None, 1, None)) is False
    assert slept == [0.1]
    assert asyncio.run(paced(None, None, 1, None)) is True
    assert slept == [0.1], "a fetch that brought records is followed by the next at once"


def test_zero_wait_leaves_aiokafka_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    before = Fetcher._proc_fetch_request
    fetchpace.pace_empty_fetches(0)
    assert Fetcher._proc_fetch_request is before
