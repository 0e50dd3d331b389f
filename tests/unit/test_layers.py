"""The layers import downwards (import-linter checks every module in `make lint`); here,
what that buys: `touchstream verify` recomputes and hashes keys without a Kafka client."""

from __future__ import annotations

import random
import subprocess
import sys

from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from touchstream.schemas.partitioning import murmur2, partition_of


def test_verify_imports_no_kafka_client_and_no_faust() -> None:
    clients = "{'faust', 'aiokafka', 'mode', 'confluent_kafka'}"
    code = (
        f"import sys, touchstream.verify; print(sorted({{m.split('.')[0] for m in sys.modules}} & {clients}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_partitioner_is_the_kafka_clients_murmur2() -> None:
    draw = random.Random(5)
    for _ in range(5000):
        key = bytes(draw.randrange(256) for _ in range(draw.randrange(0, 48)))
        assert murmur2(key) == aiokafka_murmur2(key)
        assert partition_of(key, 4) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 4
