"""Structure of ``docker-compose.yml`` and ``Dockerfile``, checked without Docker.

When ``docker compose`` and a reachable Docker engine exist, ``docker compose config -q``
validates the file against Compose's own schema as well.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.nginx.render import proxy_timeout_s, template_variables
from service.config import Limits

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SERVICES = ("torchlab", "torchlab-gpu")
REPLICA, NGINX = "torchlab-replica", "nginx"
CONTAINER_PORT = 8000
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "torchlab.conf.template"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whether written as a mapping or a list."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    assert isinstance(env, dict)
    return {str(key): str(value) for key, value in env.items()}


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container ports of a service's ``ports``, in short ("[ip:]host:container") or long form."""
    found: set[int] = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.add(int(port["target"]))
        else:
            target = str(port).rsplit(":", 1)[-1].split("/", 1)[0]
            found.add(int(target))
    return found


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    return instructions


def instruction_arguments(name: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile_instructions() if keyword == name]


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_both_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(SERVICES) <= set(services)


def test_cpu_service_has_no_profile_and_gpu_service_is_behind_gpu_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    assert "profiles" not in services["torchlab"]
    assert services["torchlab-gpu"]["profiles"] == ["gpu"]


@pytest.mark.parametrize("name", SERVICES)
def test_service_builds_from_the_root_dockerfile(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    build = services[name]["build"]
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    assert (COMPOSE_FILE.parent / context).resolve() == ROOT
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE


def test_services_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    assert services["torchlab"].get("image") == services["torchlab-gpu"].get("image")


@pytest.mark.parametrize(("name", "host_port"), [("torchlab", "8000"), ("torchlab-gpu", "8001")])
def test_ports_publish_container_port_8000(
    services: dict[str, dict[str, Any]], name: str, host_port: str
) -> None:
    assert CONTAINER_PORT in container_ports(services[name])
    assert f"{host_port}:{CONTAINER_PORT}" in [str(port) for port in services[name]["ports"]]


@pytest.mark.parametrize(("name", "device"), [("torchlab", "cpu"), ("torchlab-gpu", "auto")])
def test_environment_sets_the_device(
    services: dict[str, dict[str, Any]], name: str, device: str
) -> None:
    env = environment(services[name])
    assert env.get("TORCHLAB_DEVICE") == device
    assert all(key.startswith("TORCHLAB_") for key in env), env


@pytest.mark.parametrize("name", SERVICES)
def test_healthcheck_probes_health(services: dict[str, dict[str, Any]], name: str) -> None:
    healthcheck = services[name]["healthcheck"]
    assert "/health" in healthcheck_command(services[name])
    assert f":{CONTAINER_PORT}/health" in healthcheck_command(services[name])
    for key in ("interval", "timeout", "retries"):
        assert key in healthcheck, f"{name} healthcheck lacks {key}"
    assert int(healthcheck["retries"]) >= 1
    assert healthcheck.get("disable") is not True


@pytest.mark.parametrize("name", ["torchlab", "torchlab-gpu", "torchlab-replica"])
def test_shared_memory_holds_the_buffers_tensors_cross_in(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    # Docker gives a container 64 MiB of /dev/shm: the server's reused buffers alone may
    # take 256 MiB, and each worker's answers 128 MiB.
    size = str(services[name]["shm_size"]).lower()
    units = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    unit = next(u for u in sorted(units, key=len, reverse=True) if size.endswith(u))
    assert float(size.removesuffix(unit)) * units[unit] >= 1 << 30


@pytest.mark.parametrize("name", SERVICES)
def test_restart_policy(services: dict[str, dict[str, Any]], name: str) -> None:
    assert services[name]["restart"] == "unless-stopped"


def test_gpu_service_reserves_an_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    devices = services["torchlab-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", [])
        for device in devices
    ), devices


def test_cpu_service_reserves_no_gpu(services: dict[str, dict[str, Any]]) -> None:
    reservations = services["torchlab"].get("deploy", {}).get("resources", {})
    assert "devices" not in reservations.get("reservations", {})


# --- profile "replicas": replicas behind nginx ------------------------------------------------


def test_replicas_and_nginx_are_behind_the_replicas_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services[REPLICA]["profiles"] == ["replicas"]
    assert services[NGINX]["profiles"] == ["replicas"]


def test_replicas_run_the_services_image(services: dict[str, dict[str, Any]]) -> None:
    replica = services[REPLICA]
    assert replica["image"] == services["torchlab"]["image"]
    assert (COMPOSE_FILE.parent / replica["build"]["context"]).resolve() == ROOT
    assert environment(replica).get("TORCHLAB_DEVICE") == "cpu"
    assert all(key.startswith("TORCHLAB_") for key in environment(replica))
    assert replica["restart"] == "unless-stopped"


def test_replicas_are_counted_by_a_variable_of_at_least_two(
    services: dict[str, dict[str, Any]],
) -> None:
    count = str(services[REPLICA]["deploy"]["replicas"])
    assert count.startswith("${TORCHLAB_REPLICAS:-")
    assert int(count.removeprefix("${TORCHLAB_REPLICAS:-").rstrip("}")) >= 2


def test_replicas_publish_no_port_and_have_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    replica = services[REPLICA]
    assert "ports" not in replica  # several replicas cannot share one host port
    assert f":{CONTAINER_PORT}/health" in healthcheck_command(replica)
    assert int(replica["healthcheck"]["retries"]) >= 1


def test_nginx_starts_once_the_replicas_are_healthy(services: dict[str, dict[str, Any]]) -> None:
    assert services[NGINX]["depends_on"][REPLICA]["condition"] == "service_healthy"
    assert services[NGINX]["restart"] == "unless-stopped"


def test_nginx_renders_the_projects_template(services: dict[str, dict[str, Any]]) -> None:
    mounts = [str(volume).split(":") for volume in services[NGINX]["volumes"]]
    templates = [
        target for source, target, *_ in mounts if (ROOT / source).resolve() == NGINX_TEMPLATE
    ]
    # The image's entrypoint renders /etc/nginx/templates/X.template to conf.d/X: default.conf
    # replaces the image's own site, which would answer requests for "localhost".
    assert templates == ["/etc/nginx/templates/default.conf.template"]


def test_nginx_is_given_every_variable_of_the_template(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services[NGINX])
    assert template_variables() <= set(env), template_variables() - set(env)
    assert env["NGINX_UPSTREAM"] == f"{REPLICA}:{CONTAINER_PORT}"
    assert env["NGINX_ENVSUBST_FILTER"] == "^NGINX_"


def test_nginx_follows_the_replicas_limits(services: dict[str, dict[str, Any]]) -> None:
    replica = environment(services[REPLICA])
    limits = Limits(
        **{
            key.removeprefix("TORCHLAB_").lower(): value
            for key, value in replica.items()
            if key.removeprefix("TORCHLAB_").lower() in Limits.model_fields
        }
    )
    env = environment(services[NGINX])
    assert int(env["NGINX_MAX_BODY_BYTES"]) == limits.max_body_bytes
    assert int(env["NGINX_PROXY_TIMEOUT_S"]) == proxy_timeout_s(limits)
    assert float(env["NGINX_REQUEST_TIMEOUT_S"]) == limits.request_timeout_s
    assert {"TORCHLAB_MAX_BODY_BYTES", "TORCHLAB_REQUEST_TIMEOUT_S"} <= set(replica)


def test_nginx_publishes_its_listening_port(services: dict[str, dict[str, Any]]) -> None:
    listen = int(environment(services[NGINX])["NGINX_LISTEN"])
    assert listen in container_ports(services[NGINX])
    assert f":{listen}/health" in healthcheck_command(services[NGINX])


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_base_image_is_python_311_slim() -> None:
    assert instruction_arguments("FROM")[0].startswith("python:3.11-slim")


def test_dockerfile_healthcheck_probes_health() -> None:
    healthchecks = instruction_arguments("HEALTHCHECK")
    assert len(healthchecks) == 1
    assert f"127.0.0.1:{CONTAINER_PORT}/health" in healthchecks[0]
    assert "urllib" in healthchecks[0]


def test_dockerfile_exposes_8000() -> None:
    exposed = {
        port.split("/", 1)[0] for args in instruction_arguments("EXPOSE") for port in args.split()
    }
    assert str(CONTAINER_PORT) in exposed


def test_dockerfile_cmd_runs_uvicorn() -> None:
    commands = instruction_arguments("CMD")
    assert commands, "the Dockerfile has no CMD"
    command = json.loads(commands[-1])  # exec form, so that uvicorn is PID 1 and gets SIGTERM
    assert command[:2] == ["uvicorn", "service.main:app"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == str(CONTAINER_PORT)


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = instruction_arguments("USER")
    assert users, "the Dockerfile has no USER"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}


def test_dockerfile_installs_the_project_with_pip() -> None:
    runs = instruction_arguments("RUN")
    assert any("pip install" in run and run.rstrip().endswith(" .") for run in runs), runs


@pytest.mark.parametrize(("extras", "expected"), [("", None), ("ray", "ray[serve]")])
def test_dockerfile_installs_the_extras_it_is_given(extras: str, expected: str | None) -> None:
    """The requirements the dependency layer installs, with ``--build-arg EXTRAS=...``."""
    assert 'EXTRAS=""' in instruction_arguments("ARG")
    (run,) = [run for run in instruction_arguments("RUN") if "tomllib" in run]
    code = run.split('python -c "', 1)[1].split('" > ', 1)[0]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "EXTRAS": extras},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    requirements = result.stdout.split()
    assert any(line.startswith("torch==") for line in requirements)
    assert any(line.startswith("ray") for line in requirements) == (expected is not None)


def test_dockerfile_puts_the_deploy_directory_on_the_path() -> None:
    assert "deploy/ deploy/" in instruction_arguments("COPY")
    assert "PYTHONPATH=/app" in instruction_arguments("ENV")
    assert instruction_arguments("WORKDIR") == ["/app"]


def test_dockerignore_keeps_the_build_inputs() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "tests"} <= ignored
    assert not {"service", "schemas", "pyproject.toml", "README.md", "*.md"} & ignored


# --- docker compose config ------------------------------------------------------------------


def _docker_compose_unavailable() -> str | None:
    """Why ``docker compose config`` cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    for args, what in (
        (["docker", "compose", "version"], "the docker compose plugin is not installed"),
        (["docker", "info"], "no Docker engine is reachable (docker info failed)"),
    ):
        try:
            result = subprocess.run(args, capture_output=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return what
        if result.returncode != 0:
            return what
    return None


# Explicit ids: a "gpu" id would become a keyword, which conftest.py reads as "needs CUDA".
@pytest.mark.parametrize(
    "profile",
    [None, "gpu", "replicas"],
    ids=["default-profile", "with-gpu-profile", "with-replicas-profile"],
)
def test_docker_compose_config_is_valid(profile: str | None) -> None:
    reason = _docker_compose_unavailable()
    if reason is not None:
        pytest.skip(f"docker compose config not run: {reason}")
    args = ["docker", "compose", "-f", str(COMPOSE_FILE)]
    if profile is not None:
        args += ["--profile", profile]
    result = subprocess.run(
        [*args, "config", "-q"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
