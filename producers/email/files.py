"""`touchstream ingest-email PATH`: .eml files, mbox files and directories of them.

Only headers are parsed; bodies and attachments are never read into events. Threading
is done over the whole run before anything is published: every message joins the
thread of the messages it names (`References`, `In-Reply-To`), so a chain whose
clients dropped `References` is still one conversation, whatever order the files are
read in. Each thread's conversation_id is the root its earliest message names (for
well-formed threads, the same root the webhooks use).

A message that cannot be mapped (no From, no Date) goes to the dead-letter topic with
its header block (not its body) and the reason, and `touchstream.source.file` naming
the file (and the message's number inside an mbox).
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from touchstream.producers.email.headers import EmailHeaders, email_fields, read_headers
from touchstream.producers.email.inbound import headers_of
from touchstream.producers.health import Check
from touchstream.producers.mapping import MappingContext
from touchstream.producers.publisher import Delivery, Publisher, route
from touchstream.schemas.errors import InputError
from touchstream.schemas.topics import dead_letter_headers, dead_letter_topic
from touchstream.schemas.touchpoint import MAX_SKEW, TouchpointEvent


@dataclass(frozen=True)
class RawMessage:
    label: str
    raw: bytes


@dataclass
class IngestSummary:
    published: int = 0
    ignored: int = 0
    rejected: int = 0
    skipped_files: int = 0
    threads: int = 0
    reasons: list[str] = field(default_factory=list)


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def _message_file(path: Path) -> bool:
    return path.suffix.lower() == ".eml" or path.parent.name in {"cur", "new"}  # Maildir


def message_files(path: Path) -> tuple[list[Path], int]:
    """The files to read under `path`, and how many others were skipped."""
    if not path.exists():
        raise InputError(f"no such file or directory: {path}")
    if path.is_file():
        if _message_file(path) or _is_mbox(path):
            return [path], 0
        raise InputError(f"{path}: not an .eml file or an mbox (mbox files start with 'From ')")
    found, skipped = [], 0
    for candidate in sorted(item for item in path.rglob("*") if item.is_file()):
        if _message_file(candidate) or _is_mbox(candidate):
            found.append(candidate)
        else:
            skipped += 1
    return found, skipped


def count_messages(files: list[Path]) -> int:
    total = 0
    for path in files:
        if _message_file(path) and not _is_mbox(path):
            total += 1
        else:
            with path.open("rb") as handle:
                total += sum(1 for line in handle if line.startswith(b"From "))
    return total


def read_messages(files: list[Path]) -> Iterator[RawMessage]:
    for path in files:
        if _message_file(path) and not _is_mbox(path):
            yield RawMessage(str(path), path.read_bytes())
            continue
        box = mailbox.mbox(path, create=False)
        try:
            for number, key in enumerate(box.iterkeys(), start=1):
                yield RawMessage(f"{path}#{number}", box.get_bytes(key))
        finally:
            box.close()


def header_block(raw: bytes) -> bytes:
    """The message's header block: what a dead letter keeps (never the body)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(separator)
        if end >= 0:
            return raw[: end + len(separator)]
    return raw


def parse_message(
    raw: bytes, context: MappingContext, *, platform: str = "file", root: str | None = None
) -> dict[str, Any] | str:
    """A message's canonical fields, or why it carries no touchpoint; ValueError if unmappable."""
    return email_fields(read_headers(headers_of(header_block(raw))), context, platform=platform,
                        conversation_root=root)  # fmt: skip


class Threads:
    """Union-find over message ids: messages that name each other share a conversation."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._earliest: dict[str, tuple[datetime, str, str]] = {}

    def _find(self, node: str) -> str:
        self._parent.setdefault(node, node)
        while self._parent[node] != node:
            self._parent[node] = self._parent[self._parent[node]]
            node = self._parent[node]
        return node

    def _union(self, left: str, right: str) -> None:
        a, b = self._find(left), self._find(right)
        if a != b:
            self._parent[max(a, b)] = min(a, b)

    @staticmethod
    def _node(headers: EmailHeaders) -> str:
        return headers.message_id or f"nomsgid:{headers.fingerprint}"

    def add(self, headers: EmailHeaders) -> None:
        node = self._node(headers)
        self._find(node)
        for parent in headers.parents:
            self._union(node, parent)

    def close(self, all_headers: list[EmailHeaders]) -> None:
        """After every `add`: pick each thread's root from its earliest message."""
        for headers in all_headers:
            group = self._find(self._node(headers))
            key = (headers.date or datetime.max.replace(tzinfo=UTC), headers.event_id, headers.thread_root)
            if group not in self._earliest or key < self._earliest[group]:
                self._earliest[group] = key

    def root(self, headers: EmailHeaders) -> str:
        return self._earliest[self._find(self._node(headers))][2]

    @property
    def count(self) -> int:
        return len(self._earliest)


def ingest(
    path: Path,
    publisher: Publisher,
    context: MappingContext,
    *,
    on_progress: Callable[[int, int], None] = lambda _done, _total: None,
    timeout: float = 60.0,
    guard: Check | None = None,
) -> IngestSummary:
    """Publish the messages under `path`; while `guard` says why it is unsafe (the disk
    under the embedded broker is low), stop: what was sent is waited for, then
    `InputError` says how far it got."""
    if not context.brand_domains:
        raise InputError("no brand domains: set TOUCHSTREAM_EMAIL_BRAND_DOMAINS or pass --brand-domain")
    files, skipped = message_files(path)
    total = count_messages(files)
    summary = IngestSummary(skipped_files=skipped)
    parsed: list[tuple[RawMessage, EmailHeaders]] = []
    threads = Threads()
    for done, message in enumerate(read_messages(files), start=1):
        block = RawMessage(message.label, header_block(message.raw))
        headers = read_headers(headers_of(block.raw))
        threads.add(headers)
        parsed.append((block, headers))
        if done % 200 == 0:
            on_progress(done, total)
    threads.close([headers for _, headers in parsed])
    summary.threads = threads.count

    delivery, sent = Delivery(), 0
    dlq = dead_letter_topic(publisher.prefix)
    for block, headers in parsed:
        if guard is not None and (problem := guard()) is not None:
            publisher.wait(delivery, sent, timeout)
            raise InputError(f"stopped after publishing {summary.published} emails: {problem}")
        try:
            fields = email_fields(headers, context, platform="file", conversation_root=threads.root(headers))
            outcome: TouchpointEvent | str = (
                fields if isinstance(fields, str)
                else TouchpointEvent.model_validate(
                    {**fields, "received_at": context.received_at}, context={MAX_SKEW: context.max_skew}
                )
            )  # fmt: skip
        except ValueError as error:  # pydantic's ValidationError is a ValueError too
            reason = str(error).splitlines()[0]
            summary.rejected += 1
            if len(summary.reasons) < 20:
                summary.reasons.append(f"{block.label}: {reason}")
            letter = dead_letter_headers(reason, file=block.label)
            publisher.send_raw(dlq, None, block.raw, delivery, headers=letter)
            sent += 1
            continue
        if isinstance(outcome, str):
            summary.ignored += 1
            continue
        publisher.send_raw(*route(outcome, publisher.prefix), delivery)
        summary.published += 1
        sent += 1
    publisher.wait(delivery, sent, timeout)
    on_progress(len(parsed), total)
    if delivery.errors:
        raise InputError(f"Kafka refused {len(delivery.errors)} messages: {delivery.errors[0]}")
    return summary
