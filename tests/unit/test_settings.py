from __future__ import annotations

import pytest
from pydantic import ValidationError

from touchstream.settings import Settings


def test_defaults_are_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL", "TOUCHSTREAM_PARTITIONS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.embedded_kafka and settings.embedded_clickhouse
    assert settings.broker == "noida"


def test_well_known_variables_switch_to_real_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("CLICKHOUSE_URL", "http://default:s3cret@clickhouse:8123/touchstream")
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert not settings.embedded_clickhouse
    assert "s3cret" not in repr(settings)


def test_prefixed_values_are_parsed_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_PARTITIONS", "8")
    monkeypatch.setenv("TOUCHSTREAM_BROKER", "tansu")
    settings = Settings()
    assert settings.partitions == 8 and settings.broker == "tansu"
    monkeypatch.setenv("TOUCHSTREAM_PARTITIONS", "0")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("TOUCHSTREAM_PARTITIONS", "4")
    monkeypatch.setenv("TOUCHSTREAM_BROKER", "zookeeper")
    with pytest.raises(ValidationError):
        Settings()
