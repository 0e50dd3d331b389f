"""The data dir lock, on a real directory: one owner, and only the owner may enter it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schemas.errors import ConfigError
from touchstream.datadir import DataDirLock


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
