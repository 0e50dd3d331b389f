"""Rolling response time per customer, per channel and overall (SPEC §5), over 1 h / 24 h / 7 d.

Per channel and overall, each minute of `replied_at` holds a `Sketch`; a window's
figures merge the minutes inside it, so window edges are exact to the minute and
quantiles carry the sketch's relative error (1%). Per customer, response times are
few and kept exactly (the last 7 days of them). Count and mean are exact everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from streams.metrics.quantiles import Sketch, exact_quantile
from streams.metrics.records import ResponseRecord

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
MINUTE = 60
OVERALL = "*"


@dataclass(frozen=True)
class WindowStats:
    window: str
    count: int
    mean: float | None
    p50: float | None
    p90: float | None


def _minute(at: datetime) -> int:
    return int(at.timestamp()) // MINUTE


@dataclass
class RollingResponses:
    relative_accuracy: float = 0.01
    #: (channel or "*", minute) -> sketch of the response times replied in that minute.
    minutes: dict[tuple[str, int], Sketch] = field(default_factory=dict)
    #: customer -> [(replied_at, response_seconds)] within the longest window.
    customers: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)

    def add(self, records: Iterable[ResponseRecord]) -> None:
        for record in records:
            minute = _minute(record.replied_at)
            for key in (record.channel, OVERALL):
                sketch = self.minutes.setdefault((key, minute), Sketch(self.relative_accuracy))
                sketch.add(record.response_seconds)
            self.customers.setdefault(record.customer_id, []).append(
                (record.replied_at, record.response_seconds)
            )

    def channel(self, channel: str, at: datetime) -> list[WindowStats]:
        """Windows ending with the minute of `at` (inclusive); `channel="*"` for all."""
        last = _minute(at)
        stats = []
        for name, length in WINDOWS.items():
            first = last - int(length.total_seconds()) // MINUTE + 1
            merged = Sketch(self.relative_accuracy)
            for (key, minute), sketch in self.minutes.items():
                if key == channel and first <= minute <= last:
                    merged.merge(sketch)
            stats.append(
                WindowStats(name, merged.count, merged.mean, merged.quantile(0.5), merged.quantile(0.9))
            )
        return stats

    def customer(self, customer_id: str, at: datetime) -> list[WindowStats]:
        """Exact windows (at - length, at] over the customer's own response times."""
        stats = []
        for name, length in WINDOWS.items():
            values = [
                seconds for when, seconds in self.customers.get(customer_id, []) if at - length < when <= at
            ]
            mean = sum(values) / len(values) if values else None
            stats.append(WindowStats(name, len(values), mean, exact_quantile(values, 0.5),
                                     exact_quantile(values, 0.9)))  # fmt: skip
        return stats

    def forget_before(self, at: datetime) -> None:
        """Drop what no window ending at or after `at` can reach."""
        oldest = at - max(WINDOWS.values())
        minute = _minute(oldest)
        self.minutes = {key: sketch for key, sketch in self.minutes.items() if key[1] >= minute}
        for customer_id in list(self.customers):
            kept = [item for item in self.customers[customer_id] if item[0] > oldest]
            if kept:
                self.customers[customer_id] = kept
            else:
                del self.customers[customer_id]


def minute_start(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * MINUTE, UTC)
