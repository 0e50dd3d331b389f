"""`pip install .` installs one top-level package, `touchstream`, with every module of the
folders the design names (schemas, producers, streams, sinks) inside it, and nothing of
bench/ or tests/; and the code imports them only under that name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]
FOLDERS = ("schemas", "producers", "streams", "sinks")


def test_the_wheel_installs_only_the_touchstream_namespace(tmp_path: Path) -> None:
    # Built from a copy of the tracked files: a build leaves build/ beside the sources.
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).exists():
            target = source / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / name).is_symlink():
                target.symlink_to((ROOT / name).readlink())
            else:
                shutil.copy2(ROOT / name, target)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("touchstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"touchstream"}
    wanted = {
        f"touchstream/{path.relative_to(ROOT)}"
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".js") and "__pycache__" not in path.parts
    }
    assert wanted and wanted <= set(names), sorted(wanted - set(names))
    assert "touchstream/producers/web/touchstream.js" in names


def test_the_code_imports_the_folders_only_under_the_namespace() -> None:
    code = (
        "import sys, touchstream.cli, touchstream.runtime, touchstream.verify, touchstream.clickhouse_http; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FOLDERS)!r}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert loaded.stdout.strip() == "[]"


def test_the_benchmarks_run_from_a_checkout_whatever_the_working_directory(tmp_path: Path) -> None:
    """bench/ is not installed: `touchstream bench` finds it in the checkout the CLI runs from."""
    shown = subprocess.run(
        [sys.executable, "-m", "touchstream.cli", "bench", "streams", "--help"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: touchstream bench streams")
