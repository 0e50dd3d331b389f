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
    """A ClickHouse call failed; `code` is ClickHouse's numeric error code when known."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class InputError(TouchstreamError):
    """A file or argument supplied by the user cannot be used."""
