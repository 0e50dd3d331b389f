"""The worker's reach into faust-streaming, mode and aiokafka is checked before it starts:
on the installed libraries nothing differs, and a member gone, a changed signature, an
attribute no longer set or another version stops it with one line naming the mismatch;
and the same for the aiohttp members behind the bounded HTTP ports."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiokafka.consumer.fetcher import Fetcher
from faust.stores.rocksdb import Store
from faust.transport import consumer as faust_consumer

from touchstream import listeners
from touchstream.schemas.errors import ConfigError
from touchstream.streams import faustcompat
from touchstream.streams.faustcompat import Member


def test_the_installed_libraries_are_the_ones_the_worker_is_built_on() -> None:
    assert faustcompat.problems() == []
    faustcompat.check()


def stops(match: str) -> None:
    with pytest.raises(ConfigError, match=match) as raised:
        faustcompat.check()
    assert "\n" not in str(raised.value)


def test_a_missing_member_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(Store, "_db_for_partition")
    stops(r"faust\.stores\.rocksdb\.Store\._db_for_partition is missing")


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    async def renamed(self: Any, assignment: Any, node: int, request: Any) -> bool:
        return False

    monkeypatch.setattr(Fetcher, "_proc_fetch_request", renamed)
    stops(r"Fetcher\._proc_fetch_request takes \(self, assignment, node, request\), "
          r"not \(self, assignment, node_id, request\)")  # fmt: skip


def test_an_attribute_no_longer_set_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        self.pending = set()

    monkeypatch.setattr(faust_consumer.Consumer, "__init__", init)
    members = [
        faustcompat.Member(m.owner, m.name, m.parameters, source=faust_consumer.Consumer.__init__)
        if m.source is not None and m.owner is faust_consumer.Consumer
        else m
        for m in faustcompat.MEMBERS
    ]
    monkeypatch.setattr(faustcompat, "MEMBERS", tuple(members))
    stops(r"Consumer\._read_offset is no longer set \(and 1 more\)")


def test_another_version_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(faustcompat.VERSIONS, "aiokafka", "0.99.0")
    stops(r"aiokafka 0\.14\.0 is installed, the worker is written for 0\.99\.0")


def test_the_http_ports_check_the_aiohttp_members_they_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for aiohttp's site members behind the bounded HTTP ports (`listeners`)."""
    assert listeners.problems() == []
    monkeypatch.setattr(
        listeners, "AIOHTTP_MEMBERS", (*listeners.AIOHTTP_MEMBERS, Member(web.TCPSite, "_gone", None))
    )
    with pytest.raises(
        ConfigError, match=r"^aiohttp differs .*: aiohttp\.web_runner\.TCPSite\._gone is missing$"
    ):
        listeners.BoundedSite(web.AppRunner(web.Application()), "127.0.0.1", 0, limit=1)
    monkeypatch.setattr(listeners, "AIOHTTP_VERSION", "9.0.0")
    with pytest.raises(ConfigError, match=r"aiohttp 3\.14\.5 is installed, not 9\.0\.0"):
        listeners.check()
