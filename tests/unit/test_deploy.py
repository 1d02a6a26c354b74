"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose file
is valid against the Compose Specification schema, every command it names is part of the
CLI, and the services agree with the configs they mount."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from cdc_bridge.cli import cli
from cdc_bridge.config import BridgeConfig, parse_config

ROOT = Path(__file__).parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_SPEC = ROOT / "tests" / "fixtures" / "compose_spec.json"

# The product surface: every top-level `cdc-bridge` command, whether or not it is built yet.
# Deployment files may name only these; the ones already in the CLI are checked there too.
PRODUCT_COMMANDS = {
    "sql": {"render"},
    "check": set(),
    "triggers": {"status"},
    "migrations": {"generate"},
    "run": set(),
    "status": set(),
    "serve": set(),
    "poll": set(),
    "conflicts": {"list", "show", "resolve"},
    "batches": {"list", "show"},
    "replay": set(),
    "skip": set(),
    "park": set(),
    "snapshot": set(),
    "reconcile": set(),
    "cleanup": set(),
    "demo": set(),
}
_NAMED_COMMAND = re.compile(
    r"cdc-bridge(?: (?:-c|--config) \S+)? ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?"
)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def bridge_services() -> dict[str, Any]:
    """Services running the project's image with its cdc-bridge entrypoint."""
    return {n: s for n, s in services().items() if s.get("build") and "entrypoint" not in s}


def named_commands() -> set[tuple[str, str | None]]:
    """(command, sub-command) pairs named in the deployment files."""
    named: set[tuple[str, str | None]] = set()
    for service in bridge_services().values():
        args = [a for a in service["command"] if not a.startswith("-")]
        named.add((args[0], args[1] if len(args) > 1 else None))
    for text in (COMPOSE_FILE.read_text(encoding="utf-8"), DOCKERFILE.read_text(encoding="utf-8")):
        named |= {(m.group(1), m.group(2)) for m in _NAMED_COMMAND.finditer(text)}
    return named


def mounted_config(service: dict[str, Any]) -> BridgeConfig:
    target = service["environment"]["CDC_BRIDGE_CONFIG"]
    source = next(v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == target)
    environ = dict(_env_example())
    return parse_config((ROOT / source).read_text(encoding="utf-8"), source, environ)


def _env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def _healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://[^'\" ]+/healthz", test)
    assert match, f"healthcheck {test!r} does not request /healthz"
    return match.group(0)


# ------------------------------------------------------------------ compose file


def compose_validator() -> jsonschema.protocols.Validator:
    # The vendored schema declares draft 2019-09 under a non-canonical URI
    # ("http://json-schema.org/draft/2019-09/schema#"), so name the draft explicitly.
    schema = json.loads(COMPOSE_SPEC.read_text(encoding="utf-8"))
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    validator = compose_validator()
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert errors == []


def test_schema_validation_catches_a_broken_service() -> None:
    broken = compose()
    broken["services"]["erp-run"]["depends_on"] = {"erp-migrations": {"condition": "done"}}
    broken["services"]["erp-serve"]["healtcheck"] = {}
    errors = list(compose_validator().iter_errors(broken))
    assert sorted(".".join(map(str, e.absolute_path)) for e in errors) == [
        "services.erp-run.depends_on",
        "services.erp-serve",
    ]


def test_each_side_has_a_database_migrations_run_and_serve() -> None:
    for side in ("erp", "shop"):
        db, migrations = services()[f"{side}-db"], services()[f"{side}-migrations"]
        assert db["image"].startswith("postgres:")
        assert migrations["entrypoint"] == ["alembic"]
        assert migrations["command"] == ["upgrade", "head"]
        assert migrations["restart"] == "no"
        assert migrations["depends_on"] == {f"{side}-db": {"condition": "service_healthy"}}
        for role in ("run", "serve"):
            bridge = services()[f"{side}-{role}"]
            assert bridge["command"] == [role]
            assert bridge["depends_on"][f"{side}-migrations"] == {
                "condition": "service_completed_successfully"
            }


def test_bridges_take_secrets_only_from_the_env_file() -> None:
    env = _env_example()
    for name, service in services().items():
        if service.get("build"):
            assert service["env_file"] == ".env", name
        for value in (service.get("environment") or {}).values():
            for variable in re.findall(r"\$\{([A-Z_]+)", str(value)):
                assert variable in env, f"{name} uses ${{{variable}}}, missing in .env.example"
    assert all("change-me" in value for name, value in env.items() if "PASSWORD" in name)
    assert "change-me" in env["BRIDGE_SECRET"]


def test_mounted_configs_agree_with_the_services() -> None:
    """Health checks, peer URLs and database URLs point where the services really are."""
    for name, service in bridge_services().items():
        config = mounted_config(service)
        side, role = name.rsplit("-", 1)
        assert config.system == side
        listen = config.relay.metrics_listen if role == "run" else config.inbound.listen
        assert listen is not None
        assert urlsplit(_healthcheck_url(service)).port == int(listen.rsplit(":", 1)[1]), name
        peer = urlsplit(config.peer.url)
        assert peer.hostname == f"{config.peer.name}-serve"
        peer_listen = mounted_config(services()[f"{config.peer.name}-serve"]).inbound.listen
        assert peer.port == int(peer_listen.rsplit(":", 1)[1])
        assert urlsplit(config.database.url.get_secret_value()).hostname == f"{side}-db"


def test_every_bridge_service_has_a_healthz_healthcheck() -> None:
    assert {n.rsplit("-", 1)[1] for n in bridge_services()} == {"run", "serve"}
    for service in bridge_services().values():
        assert _healthcheck_url(service).startswith("http://127.0.0.1:")


# ------------------------------------------------------------------ commands


def test_named_commands_are_part_of_the_product_surface() -> None:
    named = named_commands()
    assert ("run", None) in named and ("serve", None) in named
    for command, sub in named:
        assert command in PRODUCT_COMMANDS, f"cdc-bridge {command} is not a product command"
        if PRODUCT_COMMANDS[command] and sub is not None:
            assert sub in PRODUCT_COMMANDS[command], f"cdc-bridge {command} {sub}"


def test_named_commands_that_are_built_exist_in_the_cli() -> None:
    built = cli.commands
    for command, sub in named_commands():
        if command in built and sub is not None:
            group = built[command]
            assert sub in getattr(group, "commands", {}), f"cdc-bridge {command} {sub}"


def test_every_cli_command_is_in_the_product_surface() -> None:
    assert set(cli.commands) <= set(PRODUCT_COMMANDS)
    for name, command in cli.commands.items():
        assert set(getattr(command, "commands", {})) <= PRODUCT_COMMANDS[name], name


# ------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_base_image_entrypoint_and_user() -> None:
    instructions = dockerfile_instructions()
    assert [v for k, v in instructions if k == "FROM"] == ["python:3.11-slim"]
    entrypoints = [json.loads(v) for k, v in instructions if k == "ENTRYPOINT"]
    assert entrypoints == [["cdc-bridge"]]
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(k == "RUN" and re.search(r"pip install \.(\s|$)", v) for k, v in instructions)


@pytest.mark.parametrize("name", ["alembic.ini", "migrations"])
def test_docker_build_context_keeps_what_migrations_need(name: str) -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert name not in ignored
    assert ".env" in ignored and ".venv" in ignored
