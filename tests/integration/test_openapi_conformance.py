"""The collector does what its OpenAPI document says: Schemathesis (from PyPI) against the
running collector, every check it has, bounded examples, a fixed seed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import KEY, Collector

ROOT = Path(__file__).resolve().parents[2]


def test_the_collector_conforms_to_its_openapi_document(
    collector_env: dict[str, str], start_collector: Callable[..., Collector], tmp_path: Path
) -> None:
    collector = start_collector()
    base = collector.url
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
    }
    report = tmp_path / "schemathesis.txt"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json", "--url", base,
        "--header", f"Authorization: Bearer {KEY}", "--checks", "all", "--max-examples", "40",
        "--seed", "1", "--max-response-time", "30",
    ]  # fmt: skip
    with report.open("w") as out:
        done = subprocess.run(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=600, check=False)  # fmt: skip
    output = report.read_text()
    assert done.returncode == 0, output[-6000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts is not None and int(counts.group(1)) == int(counts.group(2)) > 300, output[-3000:]
