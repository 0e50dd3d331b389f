"""Touchstream's exception tree.

    TouchstreamError            root: every error the project raises on purpose
    ├── ConfigError             settings that cannot work (bad URL, partition mismatch)
    ├── BrokerError             the embedded broker did not start or Kafka is unreachable
    ├── ClickHouseError         a ClickHouse call failed (server code and name kept)
    └── InputError              a file or argument given by the user cannot be used

The CLI prints any of these as one line and exits non-zero.
"""

from __future__ import annotations


class TouchstreamError(Exception):
    """Root of every error Touchstream raises on purpose."""


class ConfigError(TouchstreamError):
    """Settings that cannot work."""


class BrokerError(TouchstreamError):
    """The broker could not be started or reached."""


class ClickHouseError(TouchstreamError):
    """A ClickHouse call failed; `code` and `name` are ClickHouse's error code and name when
    known (from the driver's exception). `transient`: the same call may succeed later
    (a connection, a timeout, too many parts, memory), so it is worth retrying."""

    def __init__(
        self, message: str, *, code: int | None = None, name: str | None = None, transient: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.transient = transient


class InputError(TouchstreamError):
    """A file or argument supplied by the user cannot be used."""
