"""`touchstream up` as a user runs it: its own broker and chDB, Ctrl-C, restarts, `sql`."""

from __future__ import annotations

import functools
import itertools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from touchstream.broker import PID_FILE
from touchstream.process import wait_until

COUNT = "SELECT count() FROM touchpoints"
_runs = itertools.count()


def cli_env() -> dict[str, str]:
    unset = ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL", "TOUCHSTREAM_DATA_DIR")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env.update(
        TOUCHSTREAM_WORKER_PORT="0",
        TOUCHSTREAM_CLICKHOUSE_HTTP_PORT="0",
        TOUCHSTREAM_COLLECTOR_PORT="0",
        TOUCHSTREAM_SESSION_TIMEOUT_MS="6000",
        TOUCHSTREAM_SINK_FLUSH_SECONDS="0.3",
        TOUCHSTREAM_DEMO_RATE="300",
        TOUCHSTREAM_DEMO_HISTORY_DAYS="3",
    )
    return env


def touchstream(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "touchstream.cli", *args],
        env=env or cli_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=cwd,
    )  # fmt: skip


class Up:
    """A `touchstream up` process, as started from a terminal."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        session: bool = False,
        descriptors: int | None = None,
    ) -> None:
        """`up` in the data dir's parent; a dir named `.touchstream` is the default, so not passed.
        `session`: in a process group of its own, as a terminal starts it; `descriptors`: its
        soft and hard limit on open descriptors."""

        def limit() -> None:
            if descriptors is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

        self.data_dir = data_dir
        self.log = data_dir.parent / f"up-{data_dir.name}-{next(_runs)}.log"
        where = [] if data_dir.name == ".touchstream" else ["--data-dir", data_dir.name]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "touchstream.cli", "up", *where, *args],
                env=env or cli_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=data_dir.parent, start_new_session=session, preexec_fn=limit,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"up exited with {self.process.returncode}:\n{self.output()}")
            return "ready in" in self.output()

        wait_until(ready, timeout=90, what=f"touchstream up to be ready (log {self.log})")

    def broker_pid(self, broker: str = "noida") -> int:
        return int((self.data_dir / f"kafka-{broker}" / PID_FILE).read_text())

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.process.wait(timeout=60)

    def sql(self, query: str) -> str:
        done = touchstream("sql", query, "--data-dir", str(self.data_dir))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def count(self) -> int:
        return int(self.sql(COUNT))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def stop_all() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        if up.process.poll() is None:
            up.process.kill()
            up.process.wait()


@pytest.mark.parametrize("stop", [signal.SIGHUP, signal.SIGTERM], ids=["terminal closed", "SIGTERM"])
def test_a_signal_to_the_process_group_stops_up_cleanly(
    tmp_path: Path, stop_all: list[Up], stop: signal.Signals
) -> None:
    """Closing the terminal sends SIGHUP to `up`'s process group, a service manager SIGTERM:
    either stops `up` as Ctrl-C does, the broker with it, and leaves no control file."""
    data = tmp_path / "d"
    up = Up(data, session=True)
    stop_all.append(up)
    up.wait_ready()
    broker = up.broker_pid()
    assert (data / "control.json").exists()
    os.killpg(up.process.pid, stop)
    assert up.process.wait(timeout=60) == 0, up.output()
    assert not alive(broker)
    assert not (data / "control.json").exists()


def test_reading_verbs_find_the_running_up_and_never_make_a_data_dir(
    tmp_path: Path, stop_all: list[Up]
) -> None:
    """Run from another directory, `sql` and `customer` read the running `up`'s data (noted
    in the user's runtime dir); with no `up` running they say in one line where they
    looked, and no verb leaves a `.touchstream` behind."""
    env = {**cli_env(), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for verb in (["sql", COUNT], ["top"], ["customer", "c-1"], ["verify"]):
        done = touchstream(*verb, env=env, cwd=elsewhere)
        assert done.returncode == 1, (verb, done.stdout, done.stderr)
        assert done.stderr.strip().splitlines() == [
            f"touchstream: no Touchstream data in {elsewhere / '.touchstream'} and no running "
            "`touchstream up`: start one, or pass --data-dir (or set TOUCHSTREAM_DATA_DIR)"
        ], verb
    assert not (elsewhere / ".touchstream").exists()

    up = Up(tmp_path / "d", env=env)
    stop_all.append(up)
    up.wait_ready()
    done = touchstream("sql", COUNT, env=env, cwd=elsewhere)
    assert done.returncode == 0 and done.stdout.strip().isdigit(), done.stderr
    assert not (elsewhere / ".touchstream").exists()
    assert up.interrupt() == 0
    assert not (tmp_path / "run" / "touchstream" / "running.json").exists(), "the note goes with `up`"


def test_up_demo_runs_stops_on_ctrl_c_and_continues_with_its_data(tmp_path: Path, stop_all: list[Up]) -> None:
    data = tmp_path / ".touchstream"  # as `make demo` runs it: the default, relative data dir
    first = Up(data, "--demo")
    stop_all.append(first)
    first.wait_ready()
    banner = first.output()
    assert "kafka" in banner and "clickhouse" in banner and "worker" in banner and "demo" in banner
    broker = first.broker_pid()

    wait_until(lambda: first.count() > 0, timeout=60, what="first demo rows")
    before = first.count()
    wait_until(lambda: first.count() > before, timeout=60, what="the row count to grow")

    second = touchstream("up", "--data-dir", str(data))
    assert second.returncode == 1
    assert "in use by another touchstream process" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert alive(broker), "a refused second `up` must not touch the running broker"

    assert first.interrupt() == 0
    assert not alive(broker), "the embedded broker stops with `up`"
    assert not (data / "control.json").exists()

    stopped = int(touchstream("sql", COUNT, "--data-dir", str(data)).stdout)
    assert stopped >= before > 0, "sql works without `up`, straight from chDB"
    by_channel = "SELECT channel, count() FROM touchpoints GROUP BY channel"
    table = touchstream("sql", by_channel, "--format", "JSON", "--data-dir", str(data))
    assert table.returncode == 0 and '"meta"' in table.stdout

    again = Up(data, "--demo")
    stop_all.append(again)
    again.wait_ready()
    assert again.count() >= stopped, "a second `up` keeps what the first one stored"
    wait_until(lambda: again.count() > stopped, timeout=60, what="new rows after restart")
    assert again.interrupt() == 0
    finals = touchstream(
        "sql", "SELECT count(), uniqExact(event_id) FROM touchpoints FINAL", "--data-dir", str(data)
    )
    total, unique = map(int, finals.stdout.split())
    assert total == unique > stopped
    # Each start labels its ids: the second run added events instead of redelivering the first's.
    runs = "SELECT uniqExact(splitByChar('-', event_id)[3]) FROM touchpoints WHERE event_id LIKE 'sim-%'"
    assert touchstream("sql", runs, "--data-dir", str(data)).stdout.strip() == "2"


def stored_data_dir(path: Path) -> None:
    """A data dir with its chDB tables, as a stopped `up` leaves it (made in a process of its
    own: this one's chDB is open elsewhere)."""
    code = (
        "import sys; from pathlib import Path; from sinks.clickhouse import connect; "
        "from touchstream.settings import Settings; connect(Settings(data_dir=Path(sys.argv[1]))).close()"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], env=cli_env(), check=True, timeout=120)


def test_sql_errors_are_one_line(tmp_path: Path) -> None:
    stored_data_dir(tmp_path / "d")
    done = touchstream("sql", "SELECT nonsense FROM nowhere", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1
    assert done.stderr.startswith("touchstream: ClickHouse:") and len(done.stderr.strip().splitlines()) == 1
    bad_format = touchstream("sql", "SELECT 1", "--format", "TSV; DROP", "--data-dir", str(tmp_path / "d"))
    assert bad_format.returncode == 1 and "not a ClickHouse output format" in bad_format.stderr


def test_memory_only_broker_refuses_to_restart_beside_earlier_results(
    tmp_path: Path, stop_all: list[Up]
) -> None:
    env = {**cli_env(), "TOUCHSTREAM_BROKER": "tansu"}
    data = tmp_path / "data"
    first = Up(data, "--demo", env=env)
    stop_all.append(first)
    first.wait_ready()
    assert "in memory only" in first.output()
    broker = first.broker_pid("tansu")
    wait_until(lambda: first.count() > 0, timeout=60, what="rows through the tansu broker")
    assert first.interrupt() == 0
    assert not alive(broker)

    refused = touchstream("up", "--data-dir", str(data), env=env)
    assert refused.returncode == 1
    assert "keeps no data across restarts" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (data / "kafka-tansu" / PID_FILE).exists(), "the refused run stopped the broker it started"


def test_busy_worker_port_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**cli_env(), "TOUCHSTREAM_WORKER_PORT": str(port)}
        done = touchstream("up", "--data-dir", str(tmp_path / "d"), env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"touchstream: port {port} on 127.0.0.1 is in use; set TOUCHSTREAM_WORKER_PORT "
        "to another port, or 0 for any free one"
    )
    assert not (tmp_path / "d" / "kafka-noida").exists(), "checked before the broker starts"


def read_only_dir(tmp_path: Path) -> Path:
    """A directory on a read-only filesystem (a tmpfs mounted ro; needs root, as CI runs)."""
    path = tmp_path / "read-only"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=False)
    if mounted.returncode != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    return path


@pytest.mark.parametrize(
    "where", ["a regular file", "under /proc", "a read-only filesystem", "a corrupt broker"]
)
def test_an_unusable_data_dir_is_one_line(tmp_path: Path, where: str) -> None:
    expected = {
        "a regular file": "as the data dir: not a directory",
        "under /proc": "as the data dir: No such file or directory",
        "a read-only filesystem": "as the data dir: Read-only file system",
        "a corrupt broker": "the noida broker exited at start: error: kafka: cannot listen on",
    }[where]
    data = tmp_path / "d"
    if where == "a regular file":
        data.write_text("a file")
    elif where == "under /proc":
        data = Path("/proc/touchstream-data")
    elif where == "a read-only filesystem":
        data = read_only_dir(tmp_path)
    else:
        (data / "kafka-noida" / "data").mkdir(parents=True)
        (data / "kafka-noida" / "data" / "kafka.json").write_text('{"topics": [["x", {"name"')
    try:
        done = touchstream("up", "--data-dir", str(data))
    finally:
        if where == "a read-only filesystem":
            subprocess.run(["umount", str(data)], check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    if where == "a corrupt broker":
        assert "failed to parse kafka snapshot" in lines[0]


def not_ready(up: Up, which: str) -> bool:
    return get(up, which, "/healthz")[0] == 503


def get(up: Up, which: str, path: str) -> tuple[int, str]:
    """GET `path` from the collector or the worker `up` serves: (status, body)."""
    import re
    import urllib.error
    import urllib.request

    pattern = {
        "collector": r"collector  http://127\.0\.0\.1:(\d+)/",
        "worker": r"worker     http://127\.0\.0\.1:(\d+)/",
    }
    port = re.search(pattern[which], up.output())
    assert port is not None, up.output()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}{path}", timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post_event(up: Up, event_id: str) -> int:
    """POST one page view to the collector `up` serves; the HTTP status."""
    import json
    import re
    import urllib.request
    from datetime import UTC, datetime

    port = re.search(r"collector  http://127\.0\.0\.1:(\d+)/v1/events", up.output())
    assert port is not None, up.output()
    body = {"event_id": event_id, "occurred_at": datetime.now(UTC).isoformat(), "customer_id": "c-1",
            "channel": "web", "kind": "page_view", "direction": "inbound", "actor": "customer"}  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port.group(1)}/v1/events",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {(up.data_dir / 'collector.key').read_text().strip()}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


@pytest.mark.parametrize("sink", ["retrying", "stuck"])
def test_ctrl_c_stops_up_while_the_sink_cannot_write(tmp_path: Path, stop_all: list[Up], sink: str) -> None:
    """Retrying: ClickHouse refuses every insert with a transient error (TOO_MANY_PARTS, from
    a table whose limit is one part). Stuck: a query holds chDB for a minute (reads are
    unbounded here, TOUCHSTREAM_READ_SECONDS=0), so the sink's insert waits behind it. Either
    way Ctrl-C ends `up` promptly, leaving the batch to be read again (before, `up` waited
    for the batch to be written, for good or for the query)."""
    up = Up(tmp_path / "d", env={**cli_env(), "TOUCHSTREAM_READ_SECONDS": "0"})
    stop_all.append(up)
    up.wait_ready()
    assert post_event(up, "first") == 202
    wait_until(lambda: up.count() == 1, timeout=30, what="the first row")
    if sink == "retrying":
        up.sql("ALTER TABLE touchpoints MODIFY SETTING parts_to_throw_insert = 1")
        blocker = None
    else:
        query = "SELECT sleepEachRow(0.5) FROM numbers(120) SETTINGS max_block_size = 1"
        blocker = subprocess.Popen(
            [sys.executable, "-m", "touchstream.cli", "sql", query, "--data-dir", str(up.data_dir)],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)
    assert post_event(up, "second") == 202
    if sink == "retrying":
        wait_until(lambda: "TOO_MANY_PARTS" in up.output(), timeout=30, what="the sink to retry")
        for which in ("collector", "worker"):  # not ready once it has retried for 5 s
            wait_until(functools.partial(not_ready, up, which), timeout=30, what=f"{which} not ready")
            assert "the sink has been retrying ClickHouse" in get(up, which, "/healthz")[1]
            metrics = get(up, which, "/metrics")[1]
            assert "touchstream_worker_sink_stalls_total 1" in metrics
            assert "touchstream_worker_sink_stalled 1" in metrics
            assert "touchstream_worker_sink_retries_total 0" not in metrics
    else:
        time.sleep(2)
    began = time.monotonic()
    assert up.interrupt() == 0
    assert time.monotonic() - began < 20, "Ctrl-C ended `up` (before the fix it waited for the batch)"
    assert "Traceback" not in up.output()
    if blocker is not None:
        _, err = blocker.communicate(timeout=30)
        assert blocker.returncode == 1 and "the worker is stopping" in err


def test_health_tells_when_the_broker_is_gone(tmp_path: Path, stop_all: list[Up]) -> None:
    up = Up(tmp_path / "d")
    stop_all.append(up)
    up.wait_ready()
    assert get(up, "collector", "/healthz") == (200, '{"status": "ok"}')
    assert get(up, "worker", "/healthz")[0] == 200
    os.kill(up.broker_pid(), signal.SIGKILL)
    for which in ("collector", "worker"):
        wait_until(functools.partial(not_ready, up, which), timeout=30, what=f"{which} not ready")
        body = get(up, which, "/healthz")[1]
        assert "does not answer" in body and "Kafka at 127.0.0.1:" in body, body
    # Ctrl-C ends it all the same: cleanly, or after 30 s with one line if the stop cannot finish.
    status = up.interrupt()
    assert status == 0 or up.output().strip().splitlines()[-1].startswith("touchstream: did not stop within")


def small_disk(tmp_path: Path, megabytes: int) -> Path:
    """A real small filesystem (tmpfs of `megabytes`; mounting needs root, as CI runs)."""
    path = tmp_path / "small-disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    return path


def test_a_low_disk_stops_acknowledging_and_loses_nothing(tmp_path: Path, stop_all: list[Up]) -> None:
    """With the data dir on a 64 MB filesystem and 16 MB kept free: once the disk is low the
    collector answers 503, replay and ingest-email stop with one line, the worker pauses and
    health says why; once space is freed everything acknowledged is there, after a restart
    too. (Before: 202 and "published" while the broker kept nothing.)"""
    disk = small_disk(tmp_path, 64)
    env = {**cli_env(), "TOUCHSTREAM_MIN_FREE_DISK_MB": "16"}
    try:
        data = disk / "d"
        up = Up(data, env=env)
        stop_all.append(up)
        up.wait_ready()
        assert post_event(up, "before") == 202
        wait_until(lambda: up.count() == 1, timeout=30, what="the first row")

        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        subprocess.run(["fallocate", "-l", str(free - 8 * 2**20), str(filler)], check=True)
        time.sleep(0.3)  # the free space is measured at most every 0.2 s
        with pytest.raises(urllib.error.HTTPError) as refused:
            post_event(up, "refused")
        assert refused.value.code == 503
        assert "free under" in refused.value.read().decode()
        for which in ("collector", "worker"):
            status, body = get(up, which, "/healthz")
            assert status == 503 and "TOUCHSTREAM_MIN_FREE_DISK_MB" in body, body
        wait_until(lambda: "free under" in (json.loads(get(up, "worker", "/status")[1])["paused_by"] or ""),
                   timeout=10, what="the worker to pause")  # fmt: skip

        events = tmp_path / "events.jsonl"
        events.write_text(json.dumps({"event_id": "replayed", "occurred_at": "2026-03-02T09:00:00Z",
            "customer_id": "c-1", "channel": "web", "kind": "page_view", "direction": "inbound",
            "actor": "customer"}) + "\n")  # fmt: skip
        for verb in (
            ["replay", str(events)],
            ["ingest-email", "tests/fixtures/email", "--brand-domain", "b.example"],
        ):
            done = touchstream(*verb, "--data-dir", str(data), env=env)
            assert done.returncode == 1
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("touchstream: stopped after publishing 0 "), lines
            assert "free under" in lines[0]

        filler.unlink()
        time.sleep(0.3)
        assert post_event(up, "after") == 202
        replayed = touchstream("replay", str(events), "--data-dir", str(data), env=env)
        assert replayed.returncode == 0, replayed.stderr
        # Months behind the horizon: late, and restated (counted) by the worker.
        assert "late       1 events behind the horizon when read, 1 restated" in replayed.stdout, (
            replayed.stdout
        )
        wait_until(lambda: up.count() == 3, timeout=30, what="every acknowledged event")
        assert get(up, "collector", "/healthz")[0] == 200
        assert up.interrupt() == 0
        again = Up(data, env=env)
        stop_all.append(again)
        again.wait_ready()
        assert again.sql("SELECT event_id FROM touchpoints FINAL ORDER BY event_id").split() == [
            "after", "before", "replayed"
        ]  # fmt: skip
        assert again.interrupt() == 0
    finally:
        for up in stop_all:
            if up.process.poll() is None:
                up.process.kill()
                up.process.wait()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_customer_without_a_record_is_one_line(tmp_path: Path) -> None:
    stored_data_dir(tmp_path / "d")
    done = touchstream("customer", "nobody", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "touchstream: no record of customer 'nobody': never seen, or erased at their request "
        "(an erasure keeps no personal data, so the two look the same)"
    ]
