"""Backfill: JSONL or CSV files of canonical events into the input topics.

Valid records go to `touchpoints.<channel>`; a record that is not a valid event is not
dropped: it goes to the dead-letter topic with its raw bytes and the reason, and is
counted in the summary, so a backfill can be audited and fixed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from touchstream.producers.health import Check
from touchstream.producers.publisher import Delivery, Publisher, destination
from touchstream.schemas.codec import Rejected, decode
from touchstream.schemas.errors import InputError
from touchstream.schemas.topics import dead_letter_headers, dead_letter_topic
from touchstream.schemas.touchpoint import MAX_CLOCK_SKEW

#: CSV columns that hold JSON (objects) rather than plain strings.
_CSV_JSON_COLUMNS = {"survey", "consent", "attributes"}


@dataclass
class ReplaySummary:
    published: int = 0
    rejected: int = 0
    #: Blank lines, skipped.
    ignored: int = 0
    reasons: list[str] = field(default_factory=list)
    #: (customer_id, event_id) of the last event published: the worker has read the
    #: replay once it has stored this one.
    last: tuple[str, str] | None = None


#: A blank line of a JSONL file: counted as ignored, not published.
BLANK = b""


def _jsonl_records(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            yield number, line.rstrip(b"\r\n") if line.strip() else BLANK


def stamped(raw: bytes, now: datetime) -> bytes:
    """The record with `received_at` set to `now` where it has none (SPEC §2: the adapter
    sets it; a backfill file often has only `occurred_at`). Anything that is not a JSON
    object is left for validation to reject."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(data, dict) or data.get("received_at") not in (None, ""):
        return raw
    data["received_at"] = now.isoformat()
    return json.dumps(data).encode()


def _csv_value(column: str, value: str) -> object:
    if value == "":
        return None if column != "attributes" else {}
    if column in _CSV_JSON_COLUMNS:
        try:
            return json.loads(value)
        except ValueError:
            return value  # left for validation to reject with a reason
    if column == "schema_version" and value.isdigit():
        return int(value)
    return value


def _csv_records(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            data = {key: _csv_value(key, value) for key, value in row.items() if key}
            yield reader.line_num, json.dumps(data).encode()


def records(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw record) from a `.jsonl`/`.ndjson` or `.csv` file."""
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return _jsonl_records(path)
    if suffix == ".csv":
        return _csv_records(path)
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'}; use .jsonl or .csv")


def count_records(path: Path) -> int:
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - 1 if path.suffix.lower() == ".csv" else lines


def replay(
    path: Path,
    publisher: Publisher,
    *,
    on_progress: Callable[[int], None] = lambda _done: None,
    timeout: float = 60.0,
    max_skew: timedelta = MAX_CLOCK_SKEW,
    guard: Check | None = None,
) -> ReplaySummary:
    """Publish the records of `path`; while `guard` says why it is unsafe (the disk under
    the embedded broker is low), stop: what was sent is waited for, then `InputError`
    says how far it got."""
    summary = ReplaySummary()
    delivery = Delivery()
    dlq = dead_letter_topic(publisher.prefix)
    sent = 0
    for number, raw in records(path):
        if raw is BLANK:
            summary.ignored += 1
            continue
        if guard is not None and (problem := guard()) is not None:
            publisher.wait(delivery, sent, timeout)
            raise InputError(f"stopped after publishing {summary.published} events: {problem}")
        now = datetime.now(UTC)
        raw = stamped(raw, now)
        decoded = decode(raw, max_skew=max_skew, now=now)
        if isinstance(decoded, Rejected):
            summary.rejected += 1
            if len(summary.reasons) < 20:
                summary.reasons.append(f"{path.name}:{number}: {decoded.reason}")
            headers = dead_letter_headers(decoded.reason, file=f"{path}:{number}")
            publisher.send_raw(dlq, None, raw, delivery, headers=headers)
        else:
            publisher.send_raw(*destination(decoded, publisher.prefix), raw, delivery)
            summary.published += 1
            summary.last = (decoded.customer_id, decoded.event_id)
        sent += 1
        if sent % 1000 == 0:
            on_progress(sent)
    publisher.wait(delivery, sent, timeout)
    on_progress(sent)
    if delivery.errors:
        raise InputError(f"Kafka refused {len(delivery.errors)} records: {delivery.errors[0]}")
    return summary


def write_jsonl(lines: Iterator[bytes], out: io.BufferedWriter) -> int:
    written = 0
    for line in lines:
        out.write(line + b"\n")
        written += 1
    return written
