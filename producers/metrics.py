"""A few Prometheus metrics, rendered in the text exposition format (version 0.0.4)."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field


@dataclass
class Counter:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    _values: dict[tuple[str, ...], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, *label_values: str, amount: float = 1) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {label_values}")
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0) + amount

    def value(self, *label_values: str) -> float:
        return self._values.get(label_values, 0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if not self.labels and not self._values:
            lines.append(f"{self.name} 0")
        for label_values, value in sorted(self._values.items()):
            pairs = ",".join(
                f'{label}="{_escape(text)}"' for label, text in zip(self.labels, label_values, strict=True)
            )
            selector = f"{{{pairs}}}" if pairs else ""
            lines.append(f"{self.name}{selector} {_number(value)}")
        return lines


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    _counts: list[int] = field(default_factory=list)
    _sum: float = 0.0
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        with self._lock:
            index = bisect.bisect_left(self.buckets, value)
            if index < len(self._counts):
                self._counts[index] += 1
            self._sum += value
            self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self._counts, strict=True):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self._count}')
        lines.append(f"{self.name}_sum {_number(self._sum)}")
        lines.append(f"{self.name}_count {self._count}")
        return lines


class CollectorMetrics:
    """`source` is `events` (POST /v1/events) or a webhook route such as `chat/intercom`."""

    def __init__(self) -> None:
        self.accepted_events = Counter(
            "touchstream_collector_events_accepted_total",
            "Events acknowledged by Kafka and answered 2xx.",
            labels=("source",),
        )
        self.rejected_events = Counter(
            "touchstream_collector_events_rejected_total",
            "Items rejected with a reason (the rest of their request went on).",
            labels=("source",),
        )
        self.ignored_items = Counter(
            "touchstream_collector_items_ignored_total",
            "Webhook items that carry no touchpoint (receipts, notes, pings).",
            labels=("source",),
        )
        self.rejected_requests = Counter(
            "touchstream_collector_requests_rejected_total",
            "Requests answered 4xx/5xx.",
            labels=("source", "reason"),
        )
        self.publish_failures = Counter(
            "touchstream_collector_publish_failures_total",
            "Requests whose events Kafka did not acknowledge.",
            labels=("source",),
        )
        self.publish_seconds = Histogram(
            "touchstream_collector_publish_seconds",
            "Time from publishing a request's events to Kafka's last ack.",
        )

    def render(self) -> str:
        metrics = (
            self.accepted_events,
            self.rejected_events,
            self.ignored_items,
            self.rejected_requests,
            self.publish_failures,
            self.publish_seconds,
        )
        return "\n".join(line for metric in metrics for line in metric.render()) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
