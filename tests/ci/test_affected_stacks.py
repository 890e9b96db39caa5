"""tools/affected_stacks.py: which stacks a pull request previews."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from affected_stacks import affected, stacks_of  # noqa: E402

STACKS = ["dev", "prod", "staging"]


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (["stacks/Pulumi.prod.yaml"], ["prod"]),
        (["stacks/Pulumi.staging.yaml", "stacks/Pulumi.dev.yaml", "README.md"], ["dev", "staging"]),
        (["components/bucket.py"], STACKS),
        (["runtime/src/cosmos_export/sink.py"], STACKS),  # the worker image changes
        (["policy/rules.py", "docs/performance.md"], STACKS),
        ([".github/workflows/pulumi-stack.yml"], STACKS),
        (["requirements.txt"], STACKS),
        (["Makefile"], STACKS),  # unknown to the rules -> everything
        (
            [
                "README.md",
                "runtime/README.md",
                "tests/infra/test_stacks.py",
                "sandbox/demo.py",
                "bench/__main__.py",
                "bootstrap/identities.py",
                "tools/actionlint.cjs",
                "docs/reliability.md",
            ],
            [],
        ),
        (["stacks/Pulumi.qa.yaml"], []),  # deleted (or not in the list): nothing to preview
        ([], []),
    ],
)
def test_affected(changed, expected):
    assert affected(changed, STACKS) == expected


def test_the_repository_stacks_are_discovered():
    assert stacks_of(REPO) == STACKS


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "HOME": str(cwd),
            "PATH": "/usr/bin:/bin",
        },
    ).stdout


def test_cli_diffs_two_commits_and_prints_a_github_output_line(tmp_path):
    (tmp_path / "stacks").mkdir()
    for stack in ("dev", "prod"):
        (tmp_path / "stacks" / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    (tmp_path / "README.md").write_text("x\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "base")
    base = _git(tmp_path, "rev-parse", "HEAD").strip()
    script = str(REPO / "tools" / "affected_stacks.py")

    def run(*args):
        return subprocess.run([sys.executable, script, *args], cwd=tmp_path, capture_output=True, text=True)

    (tmp_path / "stacks" / "Pulumi.prod.yaml").write_text("config: {a: 1}\n")
    (tmp_path / "README.md").write_text("y\n")
    _git(tmp_path, "commit", "-q", "-am", "prod only")
    got = run(base, "HEAD")
    assert (got.returncode, got.stdout) == (0, 'stacks=["prod"]\n')

    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "bucket.py").write_text("x = 1\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "program")
    assert run(base, "HEAD").stdout == 'stacks=["dev","prod"]\n'

    missing = run("0" * 40, "HEAD")
    assert missing.returncode == 1 and "fetch-depth: 0" in missing.stderr
    assert run().returncode == 2
