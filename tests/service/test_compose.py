"""docker-compose.yml, checked without Docker: services, healthchecks, start order, the GPU
reservation, and that every command is a valid `chainrule` invocation for the CLI's own parser."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import typer

from chainrule.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
CHAINRULE_SERVICES = ["migrate", "api", "worker-cpu", "worker-gpu"]


def parse(argv: list[str]) -> tuple[str, dict]:
    """The command argv names and its options, parsed and checked by the CLI but not run; raises
    the CLI's usage error (exit code 2) when it rejects them."""
    ctx = typer.main.get_command(app).make_context("chainrule", list(argv))
    names = []
    while hasattr(ctx.command, "resolve_command"):      # a group: descend into the subcommand
        name, command, rest = ctx.command.resolve_command(ctx, ctx._protected_args + ctx.args)
        ctx = command.make_context(name, rest, parent=ctx)
        names.append(name)
    return " ".join(names), ctx.params


def test_services_are_all_there():
    assert set(SERVICES) == {"postgres", "redis", "migrate", "api", "worker-cpu", "worker-gpu"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(name):
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1


def test_backing_services_healthchecks():
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert SERVICES["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert "/healthz" in " ".join(SERVICES["api"]["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["api", "worker-cpu", "worker-gpu"])
def test_services_start_after_migration_and_healthy_backends(name):
    deps = SERVICES[name]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["redis"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_gpu_worker_reserves_an_nvidia_gpu():
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in SERVICES["worker-cpu"]


@pytest.mark.parametrize("name", CHAINRULE_SERVICES)
def test_commands_are_valid_chainrule_invocations(name):
    command = SERVICES[name]["command"]
    assert command[0] == "chainrule"
    parsed, args = parse(command[1:])   # a usage error (a failure) if the CLI rejects it
    expected = {"migrate": "migrate", "api": "api", "worker-cpu": "worker", "worker-gpu": "worker"}[name]
    assert parsed == expected
    if name == "worker-cpu":
        assert args["queues"] == ["cpu", "auto"] and args["device"] == "cpu"
    if name == "worker-gpu":
        assert args["queues"] == ["gpu", "auto"] and args["device"] == "cuda"
    if name == "api":
        assert (args["host"], args["port"]) == ("0.0.0.0", 8000)


@pytest.mark.parametrize("name", CHAINRULE_SERVICES)
def test_production_environment_and_shared_artifacts(name):
    env = SERVICES[name]["environment"]
    assert env["CHAINRULE_ENVIRONMENT"] == "production"
    assert env["CHAINRULE_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:" in env["CHAINRULE_DATABASE_URL"]
    assert env["CHAINRULE_BROKER_URL"] == "redis://redis:6379/0"
    assert env["CHAINRULE_KEY_PEPPER"].startswith("${CHAINRULE_KEY_PEPPER:?")   # required from the host
    assert env["CHAINRULE_ARTIFACTS_DIR"].startswith(env["CHAINRULE_DATA_DIR"])
    mounts = {m.split(":")[1]: m.split(":")[0] for m in SERVICES[name]["volumes"]}
    assert mounts[env["CHAINRULE_DATA_DIR"]] == "artifacts"
    assert "artifacts" in COMPOSE["volumes"]


def test_the_cli_rejects_what_compose_must_not_contain():
    for bad in (["worker", "--queues", "cpu,tpu"], ["worker", "--device", "tpu"], ["worker", "--concurrency", "0"],
                ["serve", "--port", "99999"], ["frobnicate"]):
        with pytest.raises(Exception) as rejected:
            parse(bad)
        assert getattr(rejected.value, "exit_code", None) == 2, (bad, rejected.value)


@pytest.mark.parametrize("name", ["worker-cpu", "worker-gpu"])
def test_worker_healthcheck_reads_the_file_the_worker_touches(name):
    """Under the shared data dir and named for the container: not /tmp, not shared between workers."""
    import re
    import socket  # noqa: F401 - the healthcheck's expression uses it
    from pathlib import Path

    from worker.options import alive_file

    command = SERVICES[name]["healthcheck"]["test"][-1]
    expression = re.search(r"getmtime\((f'[^']+')\)", command).group(1)
    data_dir = SERVICES[name]["environment"]["CHAINRULE_DATA_DIR"]
    assert eval(expression) == str(alive_file(Path(data_dir)))   # noqa: S307 - our own compose file
