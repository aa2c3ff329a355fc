"""docker-compose.yml, the Dockerfile and .env.example, checked statically (no Docker engine
in CI): the Compose specification's schema, real commands, real queues, real settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft201909Validator

from api.cli import build_parser
from core.config import Settings
from core.kinds import KINDS
from core.queue import QUEUES

REPO = Path(__file__).resolve().parents[1]
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "WINNOW_SECRET_KEY")
WORKERS = ("worker-cpu", "worker-browser", "worker-gpu")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _winnow_services() -> dict[str, dict[str, Any]]:
    """Services that run Winnow itself, from images built from this repository.

    The `browser` service reuses the worker image for its Chromium but runs only
    Playwright's server, with no settings (test_chromium_runs_where_...).
    """
    return {name: service for name, service in _compose()["services"].items() if "build" in service}


def test_compose_is_valid_by_the_compose_specification() -> None:
    # tests/data/README.md says where the schema comes from.
    schema = json.loads((REPO / "tests" / "data" / "compose-spec.json").read_text())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft201909Validator(schema).iter_errors(_compose())
    ]
    assert errors == []
    # The schema does catch mistakes: a misspelt key is an error.
    broken = _compose()
    broken["services"]["api"]["depends"] = broken["services"]["api"].pop("depends_on")
    assert not Draft201909Validator(schema).is_valid(broken)


def test_compose_has_every_role_and_the_optional_profiles() -> None:
    services = _compose()["services"]
    roles = {"postgres", "redis", "migrate", "api", *WORKERS}
    assert roles <= set(services)
    assert all("profiles" not in services[name] for name in roles)
    assert services["minio"]["profiles"] == ["minio"]
    assert services["flower"]["profiles"] == ["flower"]
    gpu = services["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_every_winnow_command_is_a_valid_cli_call_and_every_queue_has_a_worker() -> None:
    parser = build_parser()
    consumed: set[str] = set()
    for name, service in _winnow_services().items():
        command = service["command"]
        assert command[0] == "winnow", name
        args = parser.parse_args(command[1:])
        if args.command == "worker":
            consumed.update(args.queues.split(","))
        assert service["environment"]["WINNOW_BROKER_URL"].startswith("redis://"), name
        assert service["environment"]["WINNOW_DATABASE_URL"].startswith("postgresql+psycopg://")
    # The workers consume exactly the queues the Celery routes (core/kinds.py) send to.
    assert consumed == set(QUEUES) == {kind.queue.value for kind in KINDS.values()}


def test_every_variable_compose_gives_winnow_is_a_setting() -> None:
    settings = {f"WINNOW_{name.upper()}" for name in Settings.model_fields}
    for name, service in _winnow_services().items():
        unknown = set(service["environment"]) - settings
        assert unknown == set(), f"{name} sets {sorted(unknown)}, which Winnow does not read"


def test_the_api_and_workers_start_after_the_migration_succeeded() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["winnow", "migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", *WORKERS):
        waits = services[name]["depends_on"]["migrate"]["condition"]
        assert waits == "service_completed_successfully", name


def test_the_database_and_broker_sit_on_internal_networks_of_their_own() -> None:
    compose = _compose()
    services = compose["services"]
    assert services["postgres"]["networks"] == ["data"]
    assert services["redis"]["networks"] == ["broker"]
    assert all(compose["networks"][n]["internal"] for n in ("data", "broker", "store"))
    # What needs no database has no way to it.
    for name in ("flower", "minio"):
        assert "data" not in services[name]["networks"], name


def test_the_api_image_is_built_without_torch_or_chromium_and_the_workers_with_them() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM |\Z)", text, re.M | re.S))
    assert set(stages) == {"source", "api", "worker"}
    for folder in ("core", "api", "workers", "web", "migrations"):
        assert f"COPY {folder} ./{folder}" in stages["source"]
    assert "pip install --no-cache-dir .\n" in stages["api"] and "chromium" not in stages["api"]
    assert 'pip install --no-cache-dir ".[worker]"' in stages["worker"]
    assert "chromium" in stages["worker"]
    services = _compose()["services"]
    assert {services[n]["build"]["target"] for n in ("api", "migrate")} == {"api"}
    assert {services[n]["build"]["target"] for n in WORKERS} == {"worker"}


def test_compose_has_no_default_secrets_and_redis_asks_for_a_password() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for secret in SECRETS:
        assert f"${{{secret}:-" not in text, f"{secret} has a default"
        assert f"${{{secret}:?" in text, f"{secret} is not required"
    redis = " ".join(_compose()["services"]["redis"]["command"])
    assert "--requirepass" in redis and "--maxmemory-policy noeviction" in redis
    broker = _compose()["services"]["worker-cpu"]["environment"]["WINNOW_BROKER_URL"]
    assert broker.startswith("redis://:${REDIS_PASSWORD")


def _networks(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks", ["default"])
    return set(networks if isinstance(networks, list) else networks.keys())


def test_chromium_runs_where_the_database_and_redis_cannot_be_reached() -> None:
    services = _compose()["services"]
    browser = services["browser"]
    private = _networks(services["postgres"]) | _networks(services["redis"])
    assert not _networks(browser) & private
    # Nothing to steal there either: no credentials, no data volume.
    assert not browser.get("environment") and not browser.get("volumes")
    assert browser["command"][:4] == ["python", "-m", "playwright", "run-server"]
    worker = services["worker-browser"]
    assert worker["environment"]["WINNOW_BROWSER_ENDPOINT"] == "ws://browser:3000/"
    assert _networks(browser) <= _networks(worker)
    # Every other service stays off the browser's network.
    for name, service in services.items():
        if name not in ("browser", "worker-browser"):
            assert not _networks(service) & _networks(browser), name


def test_the_example_env_file_names_every_variable_compose_reads_and_holds_no_secret() -> None:
    read = set(re.findall(r"\$\{([A-Z_]+)[:}]", (REPO / "docker-compose.yml").read_text()))
    lines = (REPO / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(example) == read
    secrets = [*SECRETS, "WINNOW_ADMIN_PASSWORD", "WINNOW_STORE_SECRET_ACCESS_KEY"]
    assert {name: example[name] for name in secrets} == dict.fromkeys(secrets, "")
