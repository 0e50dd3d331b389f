"""The embedded broker's start and stop by PID, with the real noida broker."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.test_up import alive
from touchstream.broker import PID_FILE, EmbeddedBroker
from touchstream.schemas.errors import BrokerError


def test_a_stale_pid_file_stops_only_a_broker_of_this_data_dir(tmp_path: Path) -> None:
    other = EmbeddedBroker("noida", tmp_path / "other").start()
    try:
        mine = tmp_path / "mine"
        mine.mkdir()
        # A PID file left behind, naming a process that now is another data dir's broker.
        (mine / PID_FILE).write_text(str(other.process.pid if other.process else 0))
        first = EmbeddedBroker("noida", mine).start()
        assert other.process is not None and alive(other.process.pid), "another data dir's broker lives on"
        assert first.process is not None
        abandoned = first.process.pid  # as after a SIGKILLed `up`: its broker still runs
        first.process = None
        second = EmbeddedBroker("noida", mine).start()
        try:
            assert not alive(abandoned), "this data dir's own leftover broker is stopped"
        finally:
            second.stop()
    finally:
        other.stop()


def test_a_corrupt_snapshot_is_reported_in_the_brokers_own_words(tmp_path: Path) -> None:
    data = tmp_path / "kafka-noida"
    (data / "data").mkdir(parents=True)
    (data / "data" / "kafka.json").write_text('{"topics": [["x", {"name": "x", "partitions": [[0, {')
    with pytest.raises(BrokerError, match="failed to parse kafka snapshot") as raised:
        EmbeddedBroker("noida", data).start(timeout=20)
    assert "exited at start" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_broker_that_never_answers_is_reported_with_what_it_said(tmp_path: Path) -> None:
    broker = EmbeddedBroker("noida", tmp_path / "kafka-noida").start()
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)  # listening, and answering nothing
    try:
        late = EmbeddedBroker("noida", tmp_path / "late", port=broker.port)
        # The metadata probe reaches the stopped broker and gets no answer; the new one
        # has said why it is not there.
        with pytest.raises(BrokerError, match=r"exited at start: error: kafka: port \d+ is already in use"):
            late.start(timeout=2)
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
        broker.stop()
