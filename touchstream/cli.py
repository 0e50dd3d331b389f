"""`touchstream`: one entry point, one verb per job. Errors are one line, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from touchstream.schemas.errors import ClickHouseError, InputError, TouchstreamError
from touchstream.settings import Settings

if TYPE_CHECKING:
    from touchstream.control import ControlInfo
    from touchstream.sinks.clickhouse import ClickHouse
    from touchstream.streams.metrics import MetricsConfig

#: How long `touchstream verify` waits for a running worker to compute its due customers.
VERIFY_WAIT_SECONDS = 120.0


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)


def _reading_settings(args: argparse.Namespace) -> Settings:
    """Settings of a verb that reads what `up` stored (`top`, `sql`, `customer`, `verify`,
    `dashboard`): with no data dir given and none here, the running `up`'s; it never
    creates one, and says where it looked when there is no data."""
    from touchstream import control

    settings = _settings(args)
    if not settings.embedded_clickhouse:
        return settings
    given = getattr(args, "data_dir", None) or "data_dir" in settings.model_fields_set
    if not given and not settings.data_dir.exists() and (running := control.running_data_dir()) is not None:
        settings = settings.model_copy(update={"data_dir": running})
    if not settings.chdb_path.exists():
        raise TouchstreamError(
            f"no Touchstream data in {settings.data_dir.absolute()} and no running `touchstream up`: "
            "start one, or pass --data-dir (or set TOUCHSTREAM_DATA_DIR)"
        )
    return settings


def _bootstrap(settings: Settings) -> str:
    """Kafka to publish to: KAFKA_BOOTSTRAP, or the embedded broker of a running `up`."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    from touchstream.control import read_info

    info = read_info(settings.data_dir)
    if info is None:
        raise TouchstreamError(
            f"no Kafka to publish to: start `touchstream up` (data dir {settings.data_dir}) "
            "or set KAFKA_BOOTSTRAP"
        )
    return info.bootstrap


def _disk_guard(settings: Settings) -> Callable[[], str | None] | None:
    """The free-space check of the embedded broker's data dir (none for a real Kafka)."""
    checks = settings.disk_checks(clickhouse=False)
    return checks[0] if checks else None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=False,
        disable=not sys.stderr.isatty(),
        console=None,
    )


def _report_rejects(reasons: list[str], rejected: int, what: str, settings: Settings) -> int:
    """A file load's rejects on stderr; the exit status says whether there were any."""
    for reason in reasons:
        print(f"  rejected {reason}", file=sys.stderr)
    if not rejected:
        return 0
    print(f"rejected {what} were sent to {settings.topic_prefix}.dlq with their reasons", file=sys.stderr)
    return 1


def cmd_up(args: argparse.Namespace) -> int:
    from touchstream.runtime import run_worker

    run_worker(_settings(args), demo=args.demo, collector=True, dashboard=True)
    return 0


def cmd_collector(args: argparse.Namespace) -> int:
    from touchstream.collector import serve

    settings = _settings(args)
    serve(settings, _bootstrap(settings))
    return 0


def _running_dashboard(settings: Settings) -> str | None:
    """The dashboard URL of the running process that owns the embedded chDB, if any."""
    from touchstream.control import read_info
    from touchstream.datadir import owner

    if not settings.embedded_clickhouse:
        return None
    info = read_info(settings.data_dir)
    if info is not None and info.dashboard:
        return info.dashboard
    if info is not None or owner(settings.data_dir) is not None:
        raise TouchstreamError(
            f"another touchstream process owns {settings.data_dir} and serves no dashboard; "
            "run `touchstream up` (it serves one), or point CLICKHOUSE_URL at a ClickHouse server"
        )
    return None


def cmd_dashboard(args: argparse.Namespace) -> int:
    from touchstream.dashboard import web
    from touchstream.sinks.clickhouse import connect

    settings = _reading_settings(args)
    running = _running_dashboard(settings)
    if running is not None:
        raise TouchstreamError(f"the running touchstream already serves the dashboard at {running}")
    clickhouse = connect(settings)
    try:
        web.serve(settings, clickhouse)
    finally:
        clickhouse.close()
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    import json
    import urllib.request

    from touchstream.dashboard import top

    settings = _reading_settings(args)
    running = _running_dashboard(settings)
    if running is not None:
        token = settings.dashboard_token

        def read() -> dict[str, object]:
            request = urllib.request.Request(f"{running}api/snapshot")
            if token is not None:
                request.add_header("Authorization", f"Bearer {token.get_secret_value()}")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return dict(json.loads(response.read()))
            except OSError as error:
                raise TouchstreamError(f"the dashboard at {running} did not answer: {error}") from None

        top.run(read, settings.dashboard_refresh_seconds)
        return 0
    from touchstream.dashboard import web
    from touchstream.sinks.clickhouse import connect

    clickhouse = connect(settings)
    try:
        top.run(web.reader(settings, clickhouse), settings.dashboard_refresh_seconds)
    finally:
        clickhouse.close()
    return 0


def cmd_customer(args: argparse.Namespace) -> int:
    """Customer 360 in the terminal: from the running `up`'s dashboard, else from ClickHouse."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    from touchstream.dashboard import customer, customer_view

    settings = _reading_settings(args)
    try:
        page = customer.Page.parse(args.after, args.limit)
    except ValueError as error:
        raise InputError(str(error)) from None
    running = _running_dashboard(settings)
    if running is not None:
        query = urllib.parse.urlencode({"limit": page.limit, **({"after": args.after} if args.after else {})})
        request = urllib.request.Request(
            f"{running}api/customers/{urllib.parse.quote(args.id, safe='')}?{query}"
        )
        if settings.dashboard_token is not None:
            request.add_header("Authorization", f"Bearer {settings.dashboard_token.get_secret_value()}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                record = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise TouchstreamError(
                json.loads(error.read() or b"{}").get("error", f"HTTP {error.code}")
            ) from None
        except OSError as error:
            raise TouchstreamError(f"the dashboard at {running} did not answer: {error}") from None
    else:
        from touchstream.dashboard import web
        from touchstream.sinks.clickhouse import connect

        clickhouse = connect(settings)
        try:
            record = web.customer_reader(settings, clickhouse)(args.id, page)
        except customer.NoRecord as error:
            raise TouchstreamError(str(error)) from None
        finally:
            clickhouse.close()
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        customer_view.show(record)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from touchstream.runtime import run_worker

    run_worker(_settings(args), demo=False)
    return 0


def _owner_info(settings: Settings) -> ControlInfo | None:
    """The running owner of an embedded data dir, to ask instead of opening chDB here; None
    when there is none (or ClickHouse is a server)."""
    from touchstream.control import read_info
    from touchstream.datadir import owner

    if not settings.embedded_clickhouse:
        return None
    info = read_info(settings.data_dir)
    if info is None and (pid := owner(settings.data_dir)) is not None:
        raise TouchstreamError(
            f"touchstream (pid {pid}) owns {settings.data_dir} and is still starting; try again shortly"
        )
    return info


def _sql_output(settings: Settings, query: str, fmt: str, *, bounded: bool = True) -> bytes:
    """`query`'s output in format `fmt`, from the ClickHouse in use (through its owner if
    running, which bounds every read; here too unless `bounded` is false)."""
    from touchstream.control import remote_sql

    info = _owner_info(settings)
    if info is not None:
        configured = settings.worker_token.get_secret_value() if settings.worker_token else None
        return remote_sql(info, query, fmt, token=configured)
    from touchstream.sinks.clickhouse import connect

    clickhouse = connect(settings)
    try:
        return clickhouse.formatted(query, fmt, bounded=bounded)
    finally:
        clickhouse.close()


def cmd_sql(args: argparse.Namespace) -> int:
    from touchstream.control import check_format

    settings = _reading_settings(args)
    fmt = check_format(args.format or ("PrettyCompact" if sys.stdout.isatty() else "TSV"))
    sys.stdout.buffer.write(_sql_output(settings, args.query, fmt))
    sys.stdout.flush()
    return 0


Fetch = Callable[[str], list[dict[str, object]]]


@contextmanager
def _fetching(settings: Settings) -> Iterator[tuple[Fetch, ClickHouse | None]]:
    """A query's rows from the ClickHouse in use, and the connection when this process holds
    one: through the running owner of an embedded data dir, or else one connection for the
    whole run (chDB opened and closed per query grows the process by tens of MB a time)."""
    info = _owner_info(settings)
    if info is None:
        from touchstream.sinks.clickhouse import connect

        clickhouse = connect(settings)
        try:
            yield lambda query: _rows(clickhouse.formatted(query, "JSONEachRow")), clickhouse
        finally:
            clickhouse.close()
        return

    def fetch(query: str) -> list[dict[str, object]]:
        return _rows(_sql_output(settings, query, "JSONEachRow", bounded=False))

    yield fetch, None


def _rows(output: bytes) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in output.decode().splitlines() if line.strip()]


def _catch_up_analytics(
    settings: Settings, config: MetricsConfig, fetch: Fetch, clickhouse: ClickHouse | None
) -> None:
    """Bring the maintained tables (SPEC §5b) up to date before comparing: a running worker
    (`clickhouse` None) computes its due customers once its input is quiet (wait for it);
    with none running, compute here what the last one left due."""
    from touchstream.sinks.maintained import PENDING, MaintainedTables

    def pending() -> int:
        return int(str(fetch(PENDING.format(db=settings.clickhouse_database))[0]["count()"]))

    if not pending():
        return
    if clickhouse is None:
        deadline = time.monotonic() + VERIFY_WAIT_SECONDS
        while (left := pending()) and time.monotonic() < deadline:
            time.sleep(0.5)
        if left:
            raise TouchstreamError(
                f"the worker still has {left} customers' analytics to compute; try again later"
            )
        return
    computed = MaintainedTables(clickhouse.database, config).catch_up_all(clickhouse)
    print(f"computed the analytics of {computed} customers the worker left due", file=sys.stderr)


def cmd_verify(args: argparse.Namespace) -> int:
    from touchstream.verify import verify

    settings = _reading_settings(args)
    config = settings.metrics_config(demo=args.demo)
    with _fetching(settings) as (fetch, clickhouse):
        _catch_up_analytics(settings, config, fetch, clickhouse)
        diffs = verify(fetch, config, settings.partitions)
    for diff in diffs:
        state = "ok" if diff.ok else "MISMATCH"
        print(
            f"{diff.table:<20} {diff.view:<8} expected {diff.expected:>8}  stream {diff.actual:>8}  {state}"
        )
        for label, rows, count in (
            ("missing", diff.missing, diff.missing_count),
            ("unexpected", diff.unexpected, diff.unexpected_count),
        ):
            for row in rows[:5]:
                print(f"    {label}: {row}")
            if count > 5:
                print(f"    ... {count - 5} more {label}")
    return 0 if all(diff.ok for diff in diffs) else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from touchstream.producers.publisher import Publisher
    from touchstream.producers.replay import count_records, replay
    from touchstream.schemas.topics import dead_letter_topic

    settings = _settings(args)
    path = Path(args.file)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    began = datetime.now(UTC)
    publisher = Publisher(_bootstrap(settings), prefix=settings.topic_prefix)
    with _progress() as progress:
        task = progress.add_task(f"replay {path.name}", total=count_records(path))
        summary = replay(
            path,
            publisher,
            on_progress=lambda done: progress.update(task, completed=done),
            max_skew=settings.max_clock_skew,
            guard=_disk_guard(settings),
        )
    where = f" (to {dead_letter_topic(settings.topic_prefix)})" if summary.rejected else ""
    print(
        f"published {summary.published} events, rejected {summary.rejected}{where}, "
        f"ignored {summary.ignored} blank lines"
    )
    if summary.last is not None and args.wait > 0:
        _report_late(settings, began, summary.last, args.wait)
    return _report_rejects(summary.reasons, summary.rejected, "records", settings)


def _report_late(settings: Settings, since: datetime, last: tuple[str, str], wait: float) -> None:
    """Once the worker has stored the replay's last event (at most `wait` seconds), how many
    events it found late since the replay began, and how many of them it restated."""
    if settings.embedded_clickhouse and _owner_info(settings) is None:
        print("late       no worker runs on this data dir: the next one restates what it finds late")
        return
    db = settings.clickhouse_database
    customer, event = (value.replace("\\", "\\\\").replace("'", "\\'") for value in last)
    stored = (
        f"SELECT count() AS n FROM {db}.touchpoints WHERE customer_id = '{customer}' AND event_id = '{event}'"
    )
    late = (
        f"SELECT count() AS late, countIf(restated_at IS NOT NULL) AS restated FROM {db}.late_events FINAL "
        f"WHERE detected_at >= '{since.astimezone(UTC):%Y-%m-%d %H:%M:%S}'"
    )
    with _fetching(settings) as (fetch, _):
        deadline = time.monotonic() + wait
        while not int(str(fetch(stored)[0]["n"])) and time.monotonic() < deadline:
            time.sleep(0.5)
        read = bool(int(str(fetch(stored)[0]["n"])))
        found = fetch(late)[0]
    prefix = "" if read else f"(the worker has not read the whole replay within {wait:g} s) "
    counts = f"{found['late']} events behind the horizon when read, {found['restated']} restated"
    print(f"late       {prefix}{counts}")


def cmd_ingest_email(args: argparse.Namespace) -> int:
    from touchstream.producers.email.files import ingest
    from touchstream.producers.mapping import MappingContext
    from touchstream.producers.publisher import Publisher

    settings = _settings(args)
    domains = [domain.lower().lstrip("@") for domain in args.brand_domain] or settings.email_brand_domains
    if not domains:
        raise InputError(
            "no brand domains: pass --brand-domain DOMAIN or set TOUCHSTREAM_EMAIL_BRAND_DOMAINS"
        )
    path = Path(args.path)
    if not path.exists():
        raise InputError(f"no such file or directory: {path}")
    context = MappingContext(
        received_at=datetime.now(UTC),
        brand_domains=frozenset(domains),
        hash_email_addresses=settings.email_customer_ids == "sha256",
        max_skew=settings.max_clock_skew,
    )
    with Publisher(_bootstrap(settings), prefix=settings.topic_prefix) as publisher, _progress() as progress:
        task = progress.add_task(f"ingest {path.name}", total=None)
        summary = ingest(
            path,
            publisher,
            context,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            guard=_disk_guard(settings),
        )
    print(
        f"published {summary.published} emails in {summary.threads} threads, "
        f"ignored {summary.ignored} (brand-internal), rejected {summary.rejected}"
        + (
            f", skipped {summary.skipped_files} files that are not .eml or mbox"
            if summary.skipped_files
            else ""
        )
    )
    return _report_rejects(summary.reasons, summary.rejected, "messages' headers", settings)


def cmd_simulate(args: argparse.Namespace) -> int:
    from touchstream.producers.publisher import Publisher
    from touchstream.producers.simulator import Simulator, SimulatorConfig

    settings = _settings(args)
    start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    if start.tzinfo is None:
        raise InputError("--start needs a timezone, e.g. 2026-01-01T00:00:00+00:00")
    config = SimulatorConfig(seed=args.seed, customers=args.customers)
    simulator = Simulator(config, start=start)
    if args.out:
        with open(args.out, "wb") as out, _progress() as progress:
            task = progress.add_task("simulate", total=args.events)
            for number, event in enumerate(simulator.events(args.events), start=1):
                out.write(event.model_dump_json().encode() + b"\n")
                if number % 1000 == 0:
                    progress.update(task, completed=number)
            progress.update(task, completed=args.events)
        print(f"wrote {args.events} events to {args.out}")
        return 0
    with Publisher(_bootstrap(settings), prefix=settings.topic_prefix) as publisher:
        delivery = publisher.publish(simulator.events(args.events), timeout=120)
    print(f"published {delivery.delivered} events")
    return 0 if delivery.ok else 1


def cmd_schema(args: argparse.Namespace) -> int:
    from touchstream.schemas import jsonschema

    if args.out == "-":
        sys.stdout.write(jsonschema.render())
    else:
        print(f"wrote {jsonschema.write(Path(args.out))}")
    return 0


BENCHMARKS = {
    "streams": "bench.streams",
    "pipeline": "bench.pipeline",
    "collector": "bench.collector",
    "latency": "bench.latency",
    "scale": "bench.scale",
    "state": "bench.state",
}


def cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark module with the remaining arguments (each has its own --help). The
    benchmarks live in the checkout's `bench/`, which is not installed: they run from a
    checkout, whatever the working directory."""
    import importlib

    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "bench" / "__init__.py").is_file():
        raise InputError("touchstream bench runs from a checkout of the repository (bench/ is not installed)")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    module = importlib.import_module(BENCHMARKS[args.which])
    return int(module.main(args.options))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="touchstream",
        description="Live customer-engagement analytics on Kafka and ClickHouse.",
    )
    root.add_argument("--data-dir", type=Path, help="where embedded data lives (default .touchstream)")
    verbs = root.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_, description=help_)
        sub.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.set_defaults(handler=handler)
        return sub

    up = verb("up", cmd_up, "start the embedded stack: broker, collector, worker, sink (Ctrl-C stops it)")
    up.add_argument("--demo", action="store_true", help="also publish simulated journeys")
    verb("collector", cmd_collector, "serve the HTTP collector (POST /v1/events) in front of Kafka")
    verb("worker", cmd_worker, "run one stream worker against the configured Kafka and ClickHouse")
    verb("dashboard", cmd_dashboard, "serve the live ops dashboard against the ClickHouse in use")
    verb("top", cmd_top, "the live ops tables in the terminal (q quits)")
    who = verb("customer", cmd_customer, "one customer's whole record (Customer 360) in the terminal")
    who.add_argument("id", help="the customer id")
    who.add_argument("--limit", type=int, default=None, help="touchpoints per page (default 200)")
    who.add_argument("--after", help="the page after this touchpoint (as the last page's footer names it)")
    who.add_argument("--json", action="store_true", help="the record as JSON, as the API answers")
    sql = verb("sql", cmd_sql, "run a SQL query against the ClickHouse in use")
    sql.add_argument("query")
    sql.add_argument("--format", help="any ClickHouse output format (TSV when piped)")
    verify = verb(
        "verify", cmd_verify, "recompute the metrics from touchpoints and diff them with the stream's"
    )
    verify.add_argument("--demo", action="store_true", help="the stream ran with `up --demo` (its grace)")
    replay = verb("replay", cmd_replay, "publish a JSONL or CSV file of events (backfill)")
    replay.add_argument("file")
    replay.add_argument(
        "--wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="wait this long for the worker to read the replay, then report its late and restated events "
        "(0: do not wait)",
    )
    ingest = verb("ingest-email", cmd_ingest_email, "publish .eml files, mbox files or directories of them")
    ingest.add_argument("path")
    ingest.add_argument(
        "--brand-domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="a domain of the brand (repeatable); default TOUCHSTREAM_EMAIL_BRAND_DOMAINS",
    )
    simulate = verb("simulate", cmd_simulate, "generate seeded synthetic journeys")
    simulate.add_argument("--events", type=int, default=10_000)
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument("--customers", type=int, default=1000)
    simulate.add_argument("--start", help="simulated start time, ISO 8601 with timezone (default now)")
    simulate.add_argument("--out", help="write JSONL here instead of publishing to Kafka")
    bench = verb("bench", cmd_bench, "measure throughput, latency, scale or state size (not a test)")
    bench.add_argument("which", choices=sorted(BENCHMARKS))
    bench.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options, e.g. --events")
    schema = verb("schema", cmd_schema, "export the event JSON Schema")
    schema.add_argument("--out", default="docs/touchpoint-event.schema.json", help="file, or - for stdout")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status = _run(args)
    _leave_unfinished_calls(status)
    return status


def _leave_unfinished_calls(status: int, timeout: float = 3.0) -> None:
    """Exit now if a thread still runs a call that will not end (a ClickHouse query or insert
    stuck in chDB) once everything else has stopped: Python would wait for it at exit, so
    Ctrl-C would never end the process. Whatever that call was writing is not acknowledged,
    so it is read again at the next start."""
    deadline = time.monotonic() + timeout
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in others):
        print("touchstream: a ClickHouse call was still running; stopped without it", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args))
    except ValidationError as error:
        from touchstream.schemas.codec import describe

        print(f"touchstream: invalid settings: {describe(error)}", file=sys.stderr)
    except ClickHouseError as error:
        print(f"touchstream: ClickHouse: {error}", file=sys.stderr)
    except TouchstreamError as error:
        print(f"touchstream: {error}", file=sys.stderr)
    except OSError as error:  # a file or directory the operator named cannot be used
        if isinstance(error, BrokenPipeError):
            return 0
        where = f": {error.filename}" if error.filename else ""
        print(f"touchstream: {error.strerror or error}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print("touchstream: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
