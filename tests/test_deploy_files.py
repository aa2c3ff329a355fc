"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine in CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from api.cli import build_parser
from core.kinds import KINDS
from core.queue import QUEUES

REPO = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_every_role() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "api", "worker-cpu", "worker-browser", "worker-gpu"} <= set(
        services
    )
    gpu = services["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_compose_commands_are_valid_cli_calls() -> None:
    parser = build_parser()
    consumed: set[str] = set()
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if not command or command[0] != "winnow":
            continue
        args = parser.parse_args(command[1:])
        if args.command == "worker":
            consumed.update(args.queues.split(","))
        assert service["environment"]["WINNOW_BROKER_URL"].startswith("redis://"), name
        assert service["environment"]["WINNOW_DATABASE_URL"].startswith("postgresql+psycopg://")
    # Every queue a job can be sent to has a worker.
    assert consumed == set(QUEUES) >= {kind.queue for kind in KINDS.values()}


def test_dockerfile_copies_what_the_package_needs() -> None:
    text = (REPO / "Dockerfile").read_text()
    for folder in ("core", "api", "workers", "web", "migrations"):
        assert f"COPY {folder} ./{folder}" in text


def test_compose_has_no_default_secrets_and_redis_asks_for_a_password() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "WINNOW_SECRET_KEY"):
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
