"""The compose file is valid (docker-compose's own parser, no engine needed) and wires every role."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "docker" / "compose.yml"


def test_compose_file_validates_and_has_every_service():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing; the test command installs it (Debian package docker-compose)")
    env = dict(os.environ, SECRET_KEY="x" * 50, POSTGRES_PASSWORD="pw")
    r = subprocess.run([exe, "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load(r.stdout)
    assert set(config["services"]) == {"postgres", "redis", "web", "worker", "hardware", "nginx"}
    assert "hardware" in config["services"]["hardware"]["command"]
    assert config["services"]["web"]["environment"]["CELERY_BROKER_URL"].startswith("redis://")
    assert config["services"]["web"]["environment"]["CACHE_URL"].startswith("redis://")  # shared rate limits


def test_each_worker_is_health_checked_for_the_queues_it_consumes():
    """The healthcheck asks celery inspect for exactly the queues the worker's command consumes."""
    config = yaml.safe_load(COMPOSE.read_text())
    dockerfile = (COMPOSE.parent / "Dockerfile").read_text()
    default_worker = dockerfile.split("FROM base AS worker", 1)[1]
    for name in ("worker", "hardware"):
        service = config["services"][name]
        command = service.get("command") or default_worker
        command = " ".join(command) if isinstance(command, list) else command
        consumed = set(command.split("-Q", 1)[1].replace('"', " ").replace(",", " ").split()[0:2]) & {
            "inference", "render", "hardware"}
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "manage.py", "worker_health"] and "--this-host" in test
        checked = {test[i + 1] for i, arg in enumerate(test) if arg == "--queue"}
        assert checked == consumed, (name, checked, consumed)


@pytest.mark.parametrize("missing", ["SECRET_KEY", "POSTGRES_PASSWORD"])
def test_compose_refuses_to_run_without_secrets(missing):
    exe = shutil.which("docker-compose") or pytest.fail("docker-compose is missing")
    env = dict(os.environ, SECRET_KEY="x" * 50, POSTGRES_PASSWORD="pw")
    del env[missing]
    r = subprocess.run([exe, "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and f"set {missing}" in (r.stderr + r.stdout)
