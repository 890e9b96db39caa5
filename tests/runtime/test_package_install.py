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
        if stages:  # global ARGs before the first FROM (the base image) belong to no stage
            stages[-1].append((instruction.upper(), args.strip()))
    return stages


def test_dockerfile_runs_as_numeric_non_root_user_with_the_cli_entrypoint():
    build, final = dockerfile_stages()
    assert [a for i, a in build if i == "FROM"] == ["${BASE_IMAGE} AS build"]  # a digest: tests/ci/test_supply_chain.py
    assert [a for i, a in final if i == "FROM"] == ["${BASE_IMAGE}"]
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
    assert copies == ["requirements.txt pyproject.toml ./", "src ./src"]
    [install] = [a for i, a in build if i == "RUN"]
    # The runtime lock (runtime dependencies only, hashed), then the package itself with nothing fetched.
    assert "/opt/venv/bin/pip install --no-compile --require-hashes -r requirements.txt" in install
    assert "/opt/venv/bin/pip install --no-compile --no-deps --no-build-isolation --no-index ." in install
    assert not re.search(r"\[(dev|test)\]|requirements-test", install)


@pytest.mark.slow
def test_fresh_virtualenv_pip_install_runtime_gives_the_cli(tmp_path):
    """The Dockerfile's two pip steps (the hashed lock, then the package offline) into an empty venv,
    then `cosmos-export --help` from it."""
    source = tmp_path / "runtime"
    shutil.copytree(RUNTIME, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--no-compile", "--disable-pip-version-check"]
    for args in (
        ["--require-hashes", "-r", str(source / "requirements.txt")],
        ["--no-deps", "--no-build-isolation", "--no-index", str(source)],
    ):
        proc = subprocess.run(pip + args, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    result = subprocess.run(
        [str(venv / "bin" / "cosmos-export"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    for command in ("run", "doctor", "verify"):
        assert re.search(rf"│ {command}\s", result.stdout), result.stdout
    module = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "cosmos_export", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert module.returncode == 0 and "--mode" in module.stdout
