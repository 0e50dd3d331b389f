"""State benchmark: a customer's record as its history grows.

The worker keeps one record per customer in its changelog-backed table, written for
every customer a batch touches (`streams.partitions`). This runs the metric core alone
(no broker, no ClickHouse) over seeded simulated histories of growing length at the same
rate per customer, twice in one run: with a store, as the worker runs it (closed
conversations kept out of the record, `Engine.retire`, customers evicted and read back),
and keeping every conversation in the record (an engine without a store: what records
held before retirement). It reports, per history length, the customers' record bytes at
the end (mean and largest), the bytes of records written per event, and the retired
conversations' own records. Figures are bytes, not times, so they do not depend on the
machine.

Run: `touchstream bench state [--customers N] [--per-day N] [--days D ...] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.pipeline import START
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.streams.metrics import Engine, MetricsConfig
from touchstream.streams.metrics.state import SIDE

#: Events per simulated session (the simulator's mean), to turn a rate into sessions.
EVENTS_PER_SESSION = 7.4
BATCH = 1000


def measure(days: float, customers: int, per_day: float) -> dict[str, Any]:
    total = round(per_day * customers * days)
    rate = total / EVENTS_PER_SESSION / (days * 86400)
    config = SimulatorConfig(seed=11, customers=customers, sessions_per_second=rate)
    events = list(Simulator(config, START).events(total))
    records: dict[bytes, bytes] = {}
    stored = Engine(
        MetricsConfig(), load=records.get, keys=lambda prefix: [k for k in records if k.startswith(prefix)]
    )
    whole = Engine(MetricsConfig())
    written = {"retired": 0, "whole": 0}
    for start in range(0, total, BATCH):
        batch = events[start : start + BATCH]
        whole.process(batch)
        written["whole"] += sum(len(whole.export_json(c)) for c in whole.touched)
        whole.touched = set()
        stored.process(batch)
        changed = {c.encode(): stored.export_json(c) for c in stored.touched}
        records.update(changed)
        for key, value in stored.retired.items():
            if value is None:
                records.pop(key, None)
            else:
                records[key] = value
                written["retired"] += len(value)
        written["retired"] += sum(map(len, changed.values()))
        stored.touched, stored.retired = set(), {}
        stored.evict(customers // 10)
    held = [key for key in records if SIDE not in key]
    retired = [len(value) for key, value in records.items() if SIDE in key]
    kept_whole = [len(whole.export_json(c.decode())) for c in held]
    kept_small = [len(records[c]) for c in held]
    return {
        "days": round((events[-1].occurred_at - events[0].occurred_at).total_seconds() / 86400, 1),
        "events": total,
        "customers": len(held),
        "record_bytes_whole": round(statistics.mean(kept_whole)),
        "record_bytes_whole_max": max(kept_whole),
        "record_bytes": round(statistics.mean(kept_small)),
        "record_bytes_max": max(kept_small),
        "written_bytes_per_event_whole": round(written["whole"] / total),
        "written_bytes_per_event": round(written["retired"] / total),
        "retired_records": len(retired),
        "retired_record_bytes": round(statistics.mean(retired)) if retired else 0,
    }


def report(figures: dict[str, Any], out: Path) -> None:
    (out / "state.json").write_text(json.dumps(figures, indent=2) + "\n")
    lines = [
        f"# State benchmark, {figures['date']}",
        "",
        f"{figures['customers']:,} simulated customers, {figures['per_day']} events per customer per day, "
        "histories of growing length (seed 11). A customer's record in the worker's table at the end, "
        "with closed conversations kept out of it (each in its own record) against every conversation "
        "kept in it; bytes of records written per event.",
        "",
        "| days of history | events | record B, mean (max) | kept whole B, mean (max) | written B/event "
        "| kept whole, written B/event | retired conversations | B each |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in figures["runs"]:
        lines.append(
            f"| {run['days']} | {run['events']:,} | {run['record_bytes']:,} ({run['record_bytes_max']:,}) "
            f"| {run['record_bytes_whole']:,} ({run['record_bytes_whole_max']:,}) "
            f"| {run['written_bytes_per_event']:,} | {run['written_bytes_per_event_whole']:,} "
            f"| {run['retired_records']:,} | {run['retired_record_bytes']:,} |"
        )
    (out / "state.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="touchstream bench state", description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--per-day", type=float, default=2.0, help="events per customer per day")
    parser.add_argument("--days", type=float, nargs="+", default=[30.0, 90.0, 180.0, 365.0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for days in args.days:
        run = measure(days, args.customers, args.per_day)
        print(run, flush=True)
        runs.append(run)
    figures = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "customers": args.customers,
        "per_day": args.per_day,
        "runs": runs,
    }
    report(figures, args.out)
    print(f"report: {args.out / 'state.md'}, {args.out / 'state.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
