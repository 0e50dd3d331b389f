"""Every private member of faust-streaming, mode and aiokafka the worker touches, in one place.

The worker changes three things inside its stream library, each for a measured reason:
the consumer's delivery loop (`streams.batches`: records a fetch at a time), the empty
fetch of brokers that ignore the fetch wait (`streams.fetchpace`) and the table's
RocksDB databases (`streams.partitions.RocksState`); `streams.flowcontrol` overrides a
public method. Those modules reach into the libraries only through the accessors below,
and `check` (run when the worker's app is made) verifies, before anything starts, that
the installed versions are the ones this was written against and that every member
touched is still there with the same parameters; a mismatch stops the worker with one
line naming it, instead of a wrong result or a crash mid-stream.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, MutableSet
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from faust.stores.rocksdb import Store as RocksStore
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from touchstream.schemas.errors import ConfigError

#: The versions the accessors and overrides were written and tested against.
VERSIONS = {
    "faust-streaming": "0.15.3",
    "mode-streaming": "0.7.1",
    "aiokafka": "0.14.0",
    "rocksdict": "0.3.29",
}


@dataclass(frozen=True)
class Member:
    """A member touched: where it is, and the parameters it must have (None: an attribute
    set in `source`'s code rather than a callable)."""

    owner: Any
    name: str
    parameters: tuple[str, ...] | None
    #: For an attribute set by a method: the method whose source must assign it.
    source: Callable[..., Any] | None = None

    @property
    def label(self) -> str:
        owner = self.owner
        return f"{owner.__module__}.{owner.__qualname__}.{self.name}"

    def problem(self) -> str | None:
        if self.source is not None:
            try:
                text = inspect.getsource(self.source)
            except (OSError, TypeError):
                return f"{self.label}: the source that sets it cannot be read"
            return None if f"self.{self.name} =" in text else f"{self.label} is no longer set"
        found = inspect.getattr_static(self.owner, self.name, None)
        if found is None:
            return f"{self.label} is missing"
        if self.parameters is None:
            return None
        function = found.__func__ if isinstance(found, staticmethod | classmethod) else found
        try:
            names = tuple(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            return f"{self.label} has no readable signature"
        if names != self.parameters:
            return f"{self.label} takes ({', '.join(names)}), not ({', '.join(self.parameters)})"
        return None


_Consumer = faust_consumer.Consumer
MEMBERS = (
    # streams.fetchpace: wrapped to pause after an empty fetch.
    Member(Fetcher, "_proc_fetch_request", ("self", "assignment", "node_id", "request")),
    # streams.batches: the delivery loop replaced, and what it uses.
    Member(faust_aiokafka.Consumer, "_drain_messages", ("self", "fetcher")),
    Member(_Consumer, "_add_gap", ("self", "tp", "offset_from", "offset_to")),
    Member(_Consumer, "_read_offset", None, source=_Consumer.__init__),
    Member(_Consumer, "_unacked_messages", None, source=_Consumer.__init__),
    Member(faust_aiokafka.Consumer, "consumer_stopped_errors", None),
    Member(Service, "_stopped", None, source=Service.__init__),  # the consumer's, Faust's fetcher's
    Member(FlowControlQueue, "__init__", ("self", "maxsize", "flow_control", "clear_on_resume", "kwargs")),
    # streams.flowcontrol: resume overridden.
    Member(FlowControlEvent, "resume", ("self",)),
    Member(FlowControlEvent, "is_active", ("self",)),
    # streams.partitions.RocksState: the table's databases read and written directly.
    Member(RocksStore, "_db_for_partition", ("self", "partition")),
    Member(RocksStore, "offset_key", None),
)


def problems() -> list[str]:
    """What differs from what the worker was written against (empty: nothing)."""
    found = []
    for name, expected in VERSIONS.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != expected:
            found.append(f"{name} {installed} is installed, the worker is written for {expected}")
    found += [problem for member in MEMBERS if (problem := member.problem()) is not None]
    return found


def check() -> None:
    """Stop, naming the first mismatch, unless every version and member is as expected."""
    found = problems()
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"the stream library differs from the one the worker is built on: {found[0]}{more}")


def fetch_request(fetcher_class: type[Fetcher] = Fetcher) -> Callable[..., Any]:
    """aiokafka's method that sends one fetch request and processes its answer."""
    return getattr(fetcher_class, "_proc_fetch_request")  # noqa: B009 (a private member, named here)


def replace_fetch_request(method: Callable[..., Any]) -> None:
    setattr(Fetcher, "_proc_fetch_request", method)  # noqa: B010


def unacked(consumer: Any) -> MutableSet[Any]:
    """The consumer's messages delivered and not yet acknowledged (a rebalance waits for them)."""
    return consumer._unacked_messages


def read_offsets(consumer: Any) -> dict[Any, int | None]:
    """Per topic partition, the offset of the last record the consumer delivered."""
    return consumer._read_offset


async def add_gap(consumer: Any, tp: Any, first: int, last: int) -> None:
    """Offsets skipped in a partition (transaction markers), so commits may pass them."""
    await consumer._add_gap(tp, first, last)


def stopped(service: Any) -> Callable[[], bool]:
    """Whether a mode service (the consumer, Faust's fetcher) has been told to stop."""
    return service._stopped.is_set


def partition_db(table: Any, partition: int) -> Any:
    """A RocksDB table's database of one partition, opened if need be."""
    return table.data._db_for_partition(partition)


def offset_key() -> bytes:
    """The key under which a RocksDB table keeps the last changelog offset it holds."""
    return bytes(RocksStore.offset_key)
