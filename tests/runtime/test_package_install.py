"""The worker installs from its own pyproject exactly as the Dockerfile does, and the image is set up safely."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
DOCKERFILE = RUNTIME / "Dockerfile"


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(instruction, arguments) per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def test_dockerfile_runs_as_numeric_non_root_user_with_the_cli_entrypoint():
    build, final = dockerfile_stages()
    assert [a for i, a in build if i == "FROM"] == ["python:3.11-slim AS build"]
    assert [a for i, a in final if i == "FROM"] == ["python:3.11-slim"]
    [user] = [a for i, a in final if i == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    assert [a for i, a in final if i == "ENTRYPOINT"] == ['["cosmos-export"]']
    env = " ".join(a for i, a in final if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env  # read-only root: writes only under /tmp
    # The final stage copies only the built venv: no sources, no compilers, no dev dependencies.
    assert [a for i, a in final if i == "COPY"] == ["--from=build /opt/venv /opt/venv"]


def test_dockerfile_installs_the_package_from_its_own_pyproject():
    build, _ = dockerfile_stages()
    copies = [a for i, a in build if i == "COPY"]
    assert copies == ["pyproject.toml ./", "src ./src"]
    [install] = [a for i, a in build if i == "RUN"]
    assert "/opt/venv/bin/pip install --no-compile ." in install
    assert not re.search(r"\[(dev|test)\]|requirements", install)


@pytest.mark.slow
def test_fresh_virtualenv_pip_install_runtime_gives_the_cli(tmp_path):
    """`pip install ./runtime` (the Dockerfile's step) into an empty venv, then `cosmos-export --help` from it."""
    source = tmp_path / "runtime"
    shutil.copytree(RUNTIME, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-compile", "--disable-pip-version-check",
                          str(source)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    result = subprocess.run([str(venv / "bin" / "cosmos-export"), "--help"], capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    for command in ("run", "doctor", "verify"):
        assert re.search(rf"│ {command}\s", result.stdout), result.stdout
    module = subprocess.run([str(venv / "bin" / "python"), "-m", "cosmos_export", "run", "--help"],
                            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert module.returncode == 0 and "--mode" in module.stdout
