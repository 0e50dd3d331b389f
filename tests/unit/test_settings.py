from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from touchstream.schemas.errors import ConfigError
from touchstream.schemas.touchpoint import Channel
from touchstream.settings import Settings
from touchstream.sinks.clickhouse import server_database


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


def test_empty_fetch_wait_defaults_to_pacing_only_the_embedded_noida(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP", "TOUCHSTREAM_BROKER", "TOUCHSTREAM_EMPTY_FETCH_WAIT_MS"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().empty_fetch_wait_seconds == 0.1
    assert Settings(broker="tansu").empty_fetch_wait_seconds == 0
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "kafka:9092")
    assert Settings().empty_fetch_wait_seconds == 0
    monkeypatch.setenv("TOUCHSTREAM_EMPTY_FETCH_WAIT_MS", "250")
    assert Settings().empty_fetch_wait_seconds == 0.25


def test_restarted_worker_keeps_its_group_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOUCHSTREAM_WORKER_INSTANCE", raising=False)
    assert Settings(app_id="ts").group_instance_id == Settings(app_id="ts").group_instance_id
    assert Settings(app_id="ts").group_instance_id.startswith("ts-")
    assert Settings(worker_instance="worker-2").group_instance_id == "worker-2"


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("http://u:p@clickhouse:8123/analytics", "analytics"),
        ("http://u:p@clickhouse:8123", "touchstream"),
        ("https://u:p@clickhouse:8443/", "touchstream"),
    ],
)
def test_clickhouse_url_may_name_the_database(url: str, database: str) -> None:
    assert server_database(url, "touchstream") == database


def test_clickhouse_url_database_must_be_an_identifier() -> None:
    with pytest.raises(ConfigError, match="invalid database"):
        server_database("http://clickhouse:8123/drop;table", "touchstream")


def test_webhook_secrets_and_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_WEBHOOK_SECRETS", '{"intercom": "a", "chat/generic": "b"}')
    monkeypatch.setenv("TOUCHSTREAM_EMAIL_BRAND_DOMAINS", " Shop.Example, @help.shop.example ")
    settings = Settings()
    assert {name: value.get_secret_value() for name, value in settings.webhook_secrets.items()} == {
        "intercom": "a",
        "chat/generic": "b",
    }
    assert settings.email_brand_domains == ["shop.example", "help.shop.example"]
    monkeypatch.setenv("TOUCHSTREAM_WEBHOOK_SECRETS", "")
    assert Settings().webhook_secrets == {}
    monkeypatch.setenv("TOUCHSTREAM_WEBHOOK_SECRETS", "intercom=a")
    with pytest.raises(ValueError, match="JSON object"):
        Settings()


def test_business_hours_by_channel_with_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TOUCHSTREAM_BUSINESS_HOURS",
        '{"*": {"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}},'
        ' "chat": {"hours": {"mon-sun": "00:00-24:00"}}}',
    )
    config = Settings().metrics_config()
    assert config.business_hours[Channel.CHAT].weekly[6] == ((0, 24 * 60),)
    assert config.business_hours[Channel.EMAIL].timezone == "Europe/Berlin"
    assert len(config.business_hours) == len(Channel)
    monkeypatch.setenv("TOUCHSTREAM_BUSINESS_HOURS", "")
    assert Settings().metrics_config().business_hours == {}
    monkeypatch.setenv("TOUCHSTREAM_BUSINESS_HOURS", '{"fax": {"hours": {"mon": "09:00-17:00"}}}')
    with pytest.raises(ValueError, match="unknown channel 'fax'"):
        Settings()
    monkeypatch.setenv("TOUCHSTREAM_BUSINESS_HOURS", '{"chat": {"hours": {"mon": "9-5"}}}')
    with pytest.raises(ValueError, match="chat: bad opening hours"):
        Settings()


def test_sla_policies_and_team_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    default = Settings().metrics_config()
    chat = default.policy_for(None, "normal", "chat")
    assert chat is not None and chat.first_response == chat.next_response == timedelta(minutes=5)
    assert chat.resolution is None, "without a setting: the dashboard SLA per channel, for replies"
    monkeypatch.setenv(
        "TOUCHSTREAM_SLA_POLICIES",
        '[{"name": "vip", "team": "billing", "priority": "urgent", "first_response_seconds": 600,'
        ' "resolution_seconds": 86400, "business": true}, {"name": "rest", "next_response_seconds": 3600}]',
    )
    monkeypatch.setenv("TOUCHSTREAM_TEAM_HOURS", '{"billing": {"hours": {"mon-fri": "08:00-18:00"}}}')
    config = Settings().metrics_config()
    vip = config.policy_for("billing", "urgent", "email")
    assert vip is not None and (vip.name, vip.first_response, vip.business) == (
        "vip",
        timedelta(minutes=10),
        True,
    )
    rest = config.policy_for("billing", "normal", "email")
    assert rest is not None and (rest.name, rest.first_response, rest.next_response) == (
        "rest",
        None,
        timedelta(hours=1),
    )
    assert config.team_hours["billing"].weekly[0] == ((8 * 60, 18 * 60),)
    for bad, why in [
        ('{"name": "x"}', "JSON list"),
        ('[{"name": "x"}]', "sets no target"),
        ('[{"name": "x", "first_response_seconds": -5}]', "positive number"),
        ('[{"name": "x", "channel": "fax", "first_response_seconds": 5}]', "unknown channel 'fax'"),
        ('[{"name": "x", "first_reply_seconds": 5}]', "unknown fields first_reply_seconds"),
    ]:
        monkeypatch.setenv("TOUCHSTREAM_SLA_POLICIES", bad)
        with pytest.raises(ValueError, match=why):
            Settings()


def test_reads_are_bounded_by_default_in_embedded_mode() -> None:
    assert Settings().read_bound_seconds == 1.5
    assert Settings(clickhouse_url="http://u:p@ch:8123/db").read_bound_seconds == 60.0
    assert Settings(read_seconds=0).read_bound_seconds is None, "0: no bound"
    assert Settings(read_seconds=3).read_bound_seconds == 3
