"""The data dir lock, on a real directory: one owner, and only the owner may enter it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from touchstream.datadir import DataDirLock
from touchstream.schemas.errors import ConfigError


def test_the_data_dir_is_the_owners_alone(tmp_path: Path) -> None:
    loose = tmp_path / "data"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    (loose / "broker-token").write_text("secret")  # as a broker would leave it: 0644
    lock = DataDirLock(loose).acquire()
    try:
        assert loose.stat().st_mode & 0o777 == 0o700, "no one else can reach the files inside"
        fresh = DataDirLock(tmp_path / "new" / "dir").acquire()
        assert (tmp_path / "new" / "dir").stat().st_mode & 0o777 == 0o700
        fresh.release()
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            DataDirLock(loose).acquire()
    finally:
        lock.release()


def test_a_held_lock_names_its_holder_not_the_pid_in_the_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    (data / "owner.lock").write_text("999999")  # a stale PID, left by someone else
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(data / "owner.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"another touchstream process \\(pid {holder.pid}\\)"):
            DataDirLock(data).acquire()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    ("where", "reason"), [("file", "not a directory"), ("proc", "No such file or directory")]
)
def test_an_unusable_data_dir_is_one_line(tmp_path: Path, where: str, reason: str) -> None:
    path = tmp_path / "a-file" if where == "file" else Path("/proc/touchstream-data")
    if where == "file":
        path.write_text("not a directory")
    with pytest.raises(ConfigError, match=f"cannot use {path} as the data dir: {reason}"):
        DataDirLock(path).acquire()
