"""One owner per data dir: the embedded broker, chDB and worker state live there.

The owner holds an exclusive `flock` on `owner.lock` for its lifetime. The kernel
drops the lock when the process dies, even by SIGKILL, so a crash never leaves the
directory claimed, and a second `touchstream up` on the same directory is refused
instead of fighting the first over chDB files and the broker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from touchstream.schemas.errors import ConfigError

LOCK_FILE = "owner.lock"


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by its owner alone (0600), replacing
    what was there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # a file that was there keeps its mode through O_CREAT


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._file: IO[str] | None = None

    def acquire(self) -> DataDirLock:
        try:
            return self._acquire()
        except OSError as error:  # a regular file, a path under /proc, a read-only filesystem...
            reason = error.strerror or str(error)
            if isinstance(error, FileExistsError | NotADirectoryError):
                reason = "not a directory"
            raise ConfigError(f"cannot use {self.data_dir} as the data dir: {reason}") from None

    def _acquire(self) -> DataDirLock:
        # The data dir holds the broker's log and control token, chDB's files, the API key
        # and the control token: only its owner may enter it, whatever the umask made.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):  # a directory another user owns stays as it is
            os.chmod(self.data_dir, 0o700)
        handle = (self.data_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            pid = owner(self.data_dir)
            raise ConfigError(
                f"{self.data_dir} is in use by another touchstream process (pid {pid}); "
                "stop it first, or pass another --data-dir"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def owner(data_dir: Path) -> int | None:
    """PID of the live process owning `data_dir`, or None when nobody holds it.

    The kernel's lock table names the holder; the PID written in the file is only a
    fallback (it is stale when whoever holds the lock did not write it)."""
    path = data_dir / LOCK_FILE
    try:
        handle = path.open("r")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(path)
            if holder is not None:
                return holder
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def lock_holder(path: Path) -> int | None:
    """The PID holding an exclusive flock on `path`, from the kernel's `/proc/locks`
    (`1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF`), or None."""
    try:
        status = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter's line: "1: -> FLOCK ..."
            continue
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[5] == device:
            return int(fields[4]) if fields[4].isdigit() else None
    return None
