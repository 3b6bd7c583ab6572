"""What a fresh clone's two commands install, and a build without deprecation warnings."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


def planned_commands(project_root: Path, target: str, venv: Path) -> list[str]:
    """The commands ``make`` would run for ``target`` in a clone without a virtualenv."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(project_root), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_make_run_installs_the_service_only_and_make_test_adds_dev_tools(
    project_root: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run = [line for line in planned_commands(project_root, "run", venv) if " install " in line]
    assert any(line.endswith("install --quiet -e .") for line in run), run
    assert not any("dev" in line for line in run)
    test = planned_commands(project_root, "test", venv)
    assert any("install --quiet -e '.[dev]'" in line for line in test), test
    assert test[-1].split()[:2] == [f"{venv}/bin/pytest", "-q"]


@pytest.mark.slow
def test_the_build_warns_of_nothing_and_states_the_licence(
    project_root: Path, tmp_path: Path
) -> None:
    # A copy: the build writes build/ and *.egg-info beside the sources.
    source = tmp_path / "source"
    shutil.copytree(
        project_root,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "build", "data", "*.egg-info", "__pycache__", "tests", "bench"
        ),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "is deprecated" not in output and "BuildBackendWarning" not in output
    (wheel,) = tmp_path.glob("calibration_service-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    assert "License-Expression: Apache-2.0" in metadata


def installed_with(requirements: list[str]) -> set[str]:
    """The distributions ``pip install`` brings for ``requirements`` (no extras followed)."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~\[ ;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    found: set[str] = set()
    pending = [name(r) for r in requirements]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.add(current)
        try:
            needs = requires(current) or []
        except PackageNotFoundError:
            continue
        pending += [name(r) for r in needs if "extra ==" not in r]
    return found


def test_every_library_the_service_imports_comes_with_its_install(project_root: Path) -> None:
    """``make run`` installs the dependencies only: nothing may arrive through the dev tools."""
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((project_root / "pyproject.toml").read_text())["project"]
    installed = installed_with(project["dependencies"])
    distributions = packages_distributions()
    missing = {}
    for source in (project_root / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for module in names:
                top = module.split(".")[0]
                # calibration_client ships inside the service's own wheel (clients/python).
                if top in ("app", "calibration_client") or top in sys.stdlib_module_names:
                    continue
                provided = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not provided & installed:
                    missing[top] = str(source.relative_to(project_root))
    assert not missing, f"imported, but not installed with [project].dependencies: {missing}"
