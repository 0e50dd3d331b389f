"""docker-compose.yml: pinned images, and a worker configured through the real Settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from touchstream.settings import Settings
from touchstream.sinks.clickhouse import server_database

COMPOSE = Path(__file__).parents[2] / "docker-compose.yml"
_DEFAULTED = re.compile(r"\$\{(?P<name>[A-Z_]+):-(?P<default>[^}]*)\}")


def resolve(value: object) -> str:
    """Compose's `${NAME:-default}` with nothing set in the environment."""
    text = str(value)
    assert "$" not in _DEFAULTED.sub("", text), f"variable without a default in {text!r}"
    return _DEFAULTED.sub(lambda match: match["default"], text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(parsed, dict)
    return parsed


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {key: resolve(value) for key, value in compose["services"][name]["environment"].items()}


def test_images_are_pinned_to_exact_versions(compose: dict[str, Any]) -> None:
    images = {name: service.get("image", "") for name, service in compose["services"].items()}
    assert images["kafka"].startswith("apache/kafka:")
    assert images["clickhouse"].startswith("clickhouse/clickhouse-server:")
    for name in ("kafka", "clickhouse"):
        assert re.fullmatch(r"[\w./-]+:\d+(\.\d+){2,3}", images[name]), (
            f"{name} image not pinned: {images[name]}"
        )


def test_kafka_runs_kraft_without_auto_created_topics(compose: dict[str, Any]) -> None:
    kafka = service_env(compose, "kafka")
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(kafka)
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize("service", ["worker", "collector", "demo"])
def test_touchstream_services_use_only_real_settings(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = service_env(compose, service)
    fields = set(Settings.model_fields)
    for key in env:
        assert key in ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL") or (
            key.startswith("TOUCHSTREAM_") and key.removeprefix("TOUCHSTREAM_").lower() in fields
        ), f"{service} sets {key}, which no setting reads"
    for key in list(Settings.model_fields):
        monkeypatch.delenv(f"TOUCHSTREAM_{key.upper()}", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert not settings.embedded_kafka and not settings.embedded_clickhouse


def test_worker_reaches_the_compose_kafka_and_clickhouse(compose: dict[str, Any]) -> None:
    worker, kafka, clickhouse = (service_env(compose, name) for name in ("worker", "kafka", "clickhouse"))
    advertised = dict(
        (listener.split("://")[0], listener.split("://")[1])
        for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    assert worker["KAFKA_BOOTSTRAP"] in advertised.values()
    assert worker["KAFKA_BOOTSTRAP"].split(":")[0] == "kafka"

    url = urlsplit(worker["CLICKHOUSE_URL"])
    assert (url.hostname, url.port) == ("clickhouse", 8123)
    assert (url.username, url.password) == (clickhouse["CLICKHOUSE_USER"], clickhouse["CLICKHOUSE_PASSWORD"])
    assert server_database(worker["CLICKHOUSE_URL"], "unset") == clickhouse["CLICKHOUSE_DB"]
    depends = compose["services"]["worker"]["depends_on"]
    assert depends["kafka"]["condition"] == depends["clickhouse"]["condition"] == "service_healthy"


def test_worker_image_builds_from_this_repository(compose: dict[str, Any]) -> None:
    assert compose["services"]["worker"]["build"] == "."
    dockerfile = (COMPOSE.parent / "Dockerfile").read_text()
    for package in ("schemas", "producers", "streams", "sinks", "touchstream"):
        assert f"COPY {package} {package}" in dockerfile


def test_collector_has_no_default_key_and_is_published(compose: dict[str, Any]) -> None:
    collector = service_env(compose, "collector")
    assert collector["TOUCHSTREAM_COLLECTOR_API_KEYS"] == "", "no key baked into the stack"
    assert collector["TOUCHSTREAM_COLLECTOR_HOST"] == "0.0.0.0"
    port = collector["TOUCHSTREAM_COLLECTOR_PORT"]
    assert f"{port}:{port}" in compose["services"]["collector"]["ports"]
    volumes = compose["services"]["collector"]["volumes"]
    assert any(volume.endswith(":" + collector["TOUCHSTREAM_DATA_DIR"]) for volume in volumes), (
        "the generated key lives in a volume"
    )


def test_grafana_provisions_the_touchstream_data_source_against_the_compose_clickhouse(
    compose: dict[str, Any],
) -> None:
    grafana, clickhouse = compose["services"]["grafana"], service_env(compose, "clickhouse")
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    env = service_env(compose, "grafana")
    assert re.fullmatch(r"grafana-clickhouse-datasource@\d+\.\d+\.\d+", env["GF_PLUGINS_PREINSTALL_SYNC"])
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    for local in mounts:
        assert (COMPOSE.parent / local).is_dir()
    source_file = COMPOSE.parent / "deploy/grafana/provisioning/datasources/touchstream.yaml"
    source = yaml.safe_load(source_file.read_text())["datasources"][0]
    assert source["type"] == "grafana-clickhouse-datasource" and source["jsonData"]["protocol"] == "http"
    # Grafana replaces ${NAME} in provisioning files from its environment.
    filled = json.loads(re.sub(r"\$\{(\w+)\}", lambda match: env[match[1]], json.dumps(source)))
    assert (filled["jsonData"]["host"], int(filled["jsonData"]["port"])) == ("clickhouse", 8123)
    assert filled["jsonData"]["username"] == clickhouse["CLICKHOUSE_USER"]
    assert filled["secureJsonData"]["password"] == clickhouse["CLICKHOUSE_PASSWORD"]
    assert filled["jsonData"]["defaultDatabase"] == clickhouse["CLICKHOUSE_DB"]
    provider_file = COMPOSE.parent / "deploy/grafana/provisioning/dashboards/touchstream.yaml"
    provider = yaml.safe_load(provider_file.read_text())["providers"][0]
    assert provider["options"]["path"] == mounts["./deploy/grafana/dashboards"]
