"""One ClickHouse call at a time, writes first (`sinks.clickhouse.Turns`)."""

from __future__ import annotations

import threading
import time

from touchstream.sinks.clickhouse import Turns


def test_a_waiting_write_goes_before_reads_that_come_after_it() -> None:
    turns = Turns()
    order: list[str] = []
    first_read_in = threading.Event()
    release_first_read = threading.Event()

    def first_read() -> None:
        with turns.turn(write=False):
            first_read_in.set()
            release_first_read.wait(5)
            order.append("read 1")

    def call(name: str, *, write: bool) -> None:
        with turns.turn(write=write):
            order.append(name)

    threads = [threading.Thread(target=first_read)]
    threads[0].start()
    assert first_read_in.wait(5)
    writer = threading.Thread(target=call, args=("write",), kwargs={"write": True})
    writer.start()
    while not turns._writers_waiting:  # the write is waiting for the read
        time.sleep(0.001)
    reader = threading.Thread(target=call, args=("read 2",), kwargs={"write": False})
    reader.start()
    time.sleep(0.05)  # the second read would go now if reads did not yield to writes
    assert order == []
    release_first_read.set()
    for thread in (threads[0], writer, reader):
        thread.join(5)
    assert order == ["read 1", "write", "read 2"]


def test_one_call_at_a_time() -> None:
    turns = Turns()
    inside = 0
    most = 0
    lock = threading.Lock()

    def call(write: bool) -> None:
        nonlocal inside, most
        with turns.turn(write=write):
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.002)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=call, args=(n % 3 == 0,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert most == 1
