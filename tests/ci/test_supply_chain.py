"""The Python locks and the worker image: every third-party package pinned with hashes, the image from a digest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Every requirements file pip is pointed at (make deps, the Dockerfile, the policy pack).
LOCKS = [
    REPO / "requirements.txt",
    REPO / "requirements-demo.txt",
    REPO / "requirements-test.txt",
    REPO / "runtime" / "requirements.txt",
]
DOCKERFILE = REPO / "runtime" / "Dockerfile"


def requirements(path: Path) -> list[tuple[str, str, list[str]]]:
    """(name, version specifier, hashes) per requirement, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            out.append((line, "", []))  # an option line (-r, -e, --index-url ...): judged by the caller
            continue
        requirement, *options = line.split(" --hash=")
        m = re.match(r"^([A-Za-z0-9._\[\],-]+)\s*([<>=!~]=?[^\s;]+)?\s*(;.*)?$", requirement.strip())
        assert m, f"{path.name}: cannot read {requirement!r}"
        out.append((m.group(1), m.group(2) or "", [o.strip() for o in options]))
    return out


def check_lock(path: Path) -> None:
    for name, version, hashes in requirements(path):
        assert not name.startswith("-"), f"{path.name}: {name!r} (no -e/-r/index options in a lock)"
        assert version.startswith("=="), f"{path.name}: {name} is not pinned with == (a lock pins exact versions)"
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), (
            f"{path.name}: {name} has no sha256 hash"
        )


@pytest.mark.parametrize("path", LOCKS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_package_is_pinned_with_hashes(path):
    assert len(requirements(path)) >= 30
    check_lock(path)


def test_the_policy_pack_requirements_point_at_the_lock():
    entries = requirements(REPO / "policy" / "requirements.txt")
    assert entries == [("-r ../requirements-test.txt", "", [])]


def test_the_locks_agree_and_cover_their_inputs():
    """The deploy and image locks are subsets of the test lock at the same versions; each names what its .in asks."""
    pins = {p: {n.lower().replace("_", "-"): v for n, v, _ in requirements(p)} for p in LOCKS}
    full = pins[REPO / "requirements-test.txt"]
    for subset in (REPO / "requirements.txt", REPO / "requirements-demo.txt", REPO / "runtime" / "requirements.txt"):
        assert {n: v for n, v in pins[subset].items() if full.get(n) != v} == {}, subset.name
    for needed, lock in (
        ("pulumi-aws", "requirements.txt"),
        ("azure-cosmos", "runtime/requirements.txt"),
        ("pytest", "requirements-test.txt"),
        ("zizmor", "requirements-test.txt"),
        ("setuptools", "runtime/requirements.txt"),
    ):
        assert needed in pins[REPO / lock], (needed, lock)
    assert "pytest" not in pins[REPO / "runtime" / "requirements.txt"]  # the image carries no test tools
    assert "moto" in pins[REPO / "requirements-demo.txt"] and "pulumi-aws" in pins[REPO / "requirements-demo.txt"]
    for tool in ("pytest", "ruff", "mypy", "duckdb", "mutmut", "zizmor"):  # make demo installs no test tools
        assert tool not in pins[REPO / "requirements-demo.txt"], tool


@pytest.mark.parametrize(
    "line,message",
    [
        ("boto3==1.44.8", "boto3 has no sha256 hash"),
        ("boto3>=1.42 --hash=sha256:" + "0" * 64, "boto3 is not pinned with =="),
        ("boto3==1.44.8 --hash=md5:abc", "boto3 has no sha256 hash"),
        ("-e ./runtime", "no -e/-r/index options"),
    ],
)
def test_the_lock_check_rejects_an_unhashed_ranged_or_editable_line(tmp_path, line, message):
    bad = tmp_path / "requirements.txt"
    bad.write_text(line + "\n")
    with pytest.raises(AssertionError, match=message):
        check_lock(bad)


def _dockerfile() -> str:
    return re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())


def test_the_image_installs_only_hashed_packages():
    text = _dockerfile()
    runs = [line for line in text.splitlines() if line.startswith("RUN ") and "pip install" in line]
    (install,) = runs
    steps = [s.strip() for s in install.removeprefix("RUN ").split("&&")]
    pip = [s for s in steps if "pip install" in s]
    assert pip == [
        "/opt/venv/bin/pip install --no-compile --require-hashes -r requirements.txt",
        "/opt/venv/bin/pip install --no-compile --no-deps --no-build-isolation --no-index .",
    ]
    assert "COPY requirements.txt pyproject.toml ./" in text


def test_the_base_image_is_a_digest_overridable_by_build_argument():
    text = _dockerfile()
    (arg,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", arg), arg
    froms = re.findall(r"^FROM (.*)$", text, re.M)
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    # The ARG comes before the first FROM, so it reaches both stages.
    assert text.index("\nARG BASE_IMAGE=") < text.index("\nFROM ")


def test_make_deps_installs_from_the_lock_and_make_lock_refreshes_it():
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --progress-bar on --require-hashes -r requirements-test.txt" in makefile
    assert "pip install --progress-bar on --require-hashes -r requirements-demo.txt" in makefile  # make demo
    assert "pip install --quiet --no-deps --no-build-isolation -e ./runtime" in makefile
    lock = makefile[makefile.index("\nlock:") :]
    for out in (
        "-o requirements-test.txt",
        "-o requirements.txt",
        "-o requirements-demo.txt",
        "-o runtime/requirements.txt",
    ):
        assert out in lock
    assert "--generate-hashes" in makefile
