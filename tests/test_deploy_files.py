"""The Dockerfile and the compose file, checked without a container engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from app.config import Settings


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def compose_config(project_root: Path, **env: str) -> dict:
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is not installed")
        pytest.skip("docker-compose is not installed")
    environment = {k: v for k, v in os.environ.items() if k != "CALIB_API_KEYS"} | env
    done = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=project_root,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return yaml.safe_load(done.stdout)


@pytest.mark.parametrize(
    "keys", ['{"0123456789abcdef-ops": ["read", "train"], "0123456789abcdef-bot": ["admin"]}', None]
)
def test_compose_hands_the_api_keys_over_intact(project_root: Path, keys: str | None) -> None:
    config = compose_config(project_root, **({"CALIB_API_KEYS": keys} if keys else {}))
    environment = config["services"]["calibration"]["environment"]
    rendered = environment["CALIB_API_KEYS"]
    assert rendered == (keys or "")
    # What the service makes of it: the same keys, or none (an open service).
    settings = Settings(api_keys=rendered)
    assert settings.api_keys == ({} if keys is None else {
        "0123456789abcdef-ops": ["read", "train"], "0123456789abcdef-bot": ["admin"]
    })  # fmt: skip


def test_image_installs_dependencies_in_their_own_layer_then_the_package_plainly(
    project_root: Path,
) -> None:
    steps = instructions(project_root / "Dockerfile")
    copies = [i for i, (kind, _) in enumerate(steps) if kind == "COPY"]
    installs = [
        i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "pip install" in args
    ]
    dependency_step, package_step = installs
    # Only pyproject.toml is copied before the dependencies are installed: code changes keep
    # that layer cached.
    before = [steps[i][1] for i in copies if i < dependency_step]
    assert len(before) == 1 and before[0].split()[0] == "pyproject.toml"
    assert any(
        steps[i][1].split()[0] == "app" for i in copies if dependency_step < i < package_step
    )
    assert "--no-deps" in steps[package_step][1]
    assert not any(re.search(r"(--editable|\s-e\s)", args) for _, args in steps)


def test_image_dependency_list_is_the_projects(project_root: Path, tmp_path: Path) -> None:
    """Runs the Dockerfile's own extraction command on a copy of pyproject.toml."""
    steps = instructions(project_root / "Dockerfile")
    (run,) = [args for kind, args in steps if kind == "RUN" and "tomllib" in args]
    command = run.split(" > ", 1)[0].replace("/tmp/src/pyproject.toml", "pyproject.toml")
    shutil.copy(project_root / "pyproject.toml", tmp_path)
    done = subprocess.run(
        ["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    declared = tomllib.loads((project_root / "pyproject.toml").read_text())["project"]
    assert done.stdout.splitlines() == declared["dependencies"]


def test_image_gives_the_service_user_a_writable_matplotlib_directory(project_root: Path) -> None:
    steps = instructions(project_root / "Dockerfile")
    env = " ".join(args for kind, args in steps if kind == "ENV")
    home = re.search(r"HOME=(\S+)", env).group(1)
    config_dir = re.search(r"MPLCONFIGDIR=(\S+)", env).group(1)
    assert config_dir.startswith(home + "/")
    (user,) = [args for kind, args in steps if kind == "RUN" and "useradd" in args]
    assert "--uid 10001" in user and "--create-home" in user and f"--home-dir {home}" in user
    switched = next(i for i, (kind, args) in enumerate(steps) if kind == "USER")
    assert steps[switched][1].startswith("10001")
    # The font cache is built once, as that user, into the image.
    assert any(kind == "RUN" and "matplotlib" in args for kind, args in steps[switched + 1 :])
