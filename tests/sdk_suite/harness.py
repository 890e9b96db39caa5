"""The azure-cosmos SDK's own tests, run against the project's gateway double.

`python -m tests.sdk_suite.harness [test files...]` downloads the sdist of the azure-cosmos version the
worker is locked to (runtime/requirements.txt) with pip, caches its tests/ under .cache/, starts the
double over HTTPS with a fresh account key (the control credential the tests use for their setup:
create/delete database and container), runs the chosen test files in a pytest subprocess, and compares
every outcome with OUT_OF_SCOPE (out_of_scope.txt: the one place a test may be excused, with a reason).

Fails on: a failure or error not listed, a listed test that now passes (the list must stay true),
or an SDK version mismatch between the lock and the venv.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "azure-cosmos-sdk-tests"
OUT_OF_SCOPE = HERE / "out_of_scope.txt"

#: The SDK test files the double is held to: change feed, feed ranges, pk ranges, MurmurHash,
#: partition keys (hierarchical included) and the simple query tests.
SUITE = (
    "test_change_feed.py",
    "test_change_feed_all_versions.py",
    "test_changefeed_partition_key_variation.py",
    "test_feed_range.py",
    "test_feed_range_continuation_token.py",
    "test_murmurhash3.py",
    "test_partition_key.py",
    "test_partition_key_undefined_unit.py",
    "test_pk_range_drain.py",
    "test_routing_map.py",
    "routing/test_collection_routing_map.py",
    "test_query_feed_range.py",
    "test_query_feed_range_multipartition.py",
    "test_crud_subpartition.py",
    "test_query.py",
)

_PYTEST_INI = """[pytest]
# Written by tests/sdk_suite/harness.py: the SDK's markers are not registered, and no timeout plugin config.
addopts = -p no:cacheprovider
filterwarnings = ignore
"""


def locked_version() -> str:
    text = (ROOT / "runtime" / "requirements.txt").read_text()
    match = re.search(r"^azure-cosmos==([\w.]+)", text, re.MULTILINE)
    if match is None:
        raise SystemExit("runtime/requirements.txt pins no azure-cosmos==X: cannot pick the SDK tests to run")
    return match.group(1)


def sdk_tests(version: str) -> Path:
    """The sdist's tests/ directory, downloaded once per version (pip, from PyPI) and cached."""
    target = CACHE / version
    tests = target / "tests"
    if (tests / "test_config.py").exists():
        return tests
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"azure-cosmos=={version}",
                "-d",
                download,
            ],
            check=True,
        )
        (sdist,) = Path(download).glob("azure_cosmos-*.tar.gz")
        prefix = f"azure_cosmos-{version}/tests/"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for member in members:
                member.name = member.name[len(f"azure_cosmos-{version}/") :]
            tar.extractall(target, members=members, filter="data")
    (tests / "pytest.ini").write_text(_PYTEST_INI)
    return tests


def out_of_scope() -> dict[str, str]:
    """test id -> reason, from out_of_scope.txt (`<id> | <reason>`; # comments)."""
    listed = {}
    for number, line in enumerate(OUT_OF_SCOPE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test_id, _, reason = (part.strip() for part in line.partition(" | "))
        if not reason.strip():
            raise SystemExit(f"{OUT_OF_SCOPE.name}:{number}: {test_id} has no reason; write ` | <reason>` after the id")
        listed[test_id] = reason.strip()
    return listed


@dataclass
class Report:
    outcomes: dict[str, str] = field(default_factory=dict)  # test id -> passed|failed|skipped
    messages: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    excused: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = SUITE

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)

    @property
    def unexpected_failures(self) -> list[str]:
        return sorted(t for t, o in self.outcomes.items() if o == "failed" and t not in self.excused)

    @property
    def stale_excuses(self) -> list[str]:
        """Listed as out of scope but passed (or no longer exists): the list must be updated."""
        return sorted(
            t
            for t in self.excused
            if t.split("::")[0] in self.files and self.outcomes.get(t, "missing") in ("passed", "missing")
        )

    def summary(self) -> str:
        failed = self.unexpected_failures
        out = sum(1 for t in self.excused if self.outcomes.get(t) == "failed")
        lines = [
            f"azure-cosmos SDK tests against the double: {len(self.outcomes)} cases, {self.count('passed')} passed, "
            f"{len(failed)} failed, {out} out of scope ({OUT_OF_SCOPE.name}), "
            f"{self.count('skipped')} skipped by the SDK itself, in {self.seconds:.0f} s"
        ]
        lines += [f"FAILED {t}: {self.messages.get(t, '')[:300]}" for t in failed]
        lines += [
            f"STALE {t}: listed as out of scope but {self.outcomes.get(t, 'not run')}" for t in self.stale_excuses
        ]
        return "\n".join(lines)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _test_id(case: ET.Element) -> str:
    classname = case.get("classname", "")
    # junit classname: "test_query.TestQuery" or "routing.test_collection_routing_map.Class"
    module, _, cls = classname.rpartition(".") if "." in classname else (classname, "", "")
    path = module.replace(".", "/") + ".py"
    # Some SDK tests are parametrized with container ids built from uuid4: one stable id per test.
    name = _UUID.sub("<uuid>", case.get("name") or "")
    return f"{path}::{cls}::{name}" if cls else f"{path}::{name}"


def run(files: tuple[str, ...] = SUITE, *, timeout: float = 600) -> Report:
    from azure.cosmos import __version__ as installed

    from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
    from sandbox.doubles.tls import create_local_ca

    version = locked_version()
    if installed != version:
        raise SystemExit(f"azure-cosmos {installed} is installed but the worker is locked to {version}: run make deps")
    tests = sdk_tests(version)
    key = base64.b64encode(secrets.token_bytes(64)).decode()  # a fresh account key per run, never stored
    report = Report(excused=out_of_scope(), files=files)
    with tempfile.TemporaryDirectory() as tmp:
        ca = create_local_ca(Path(tmp) / "ca")
        state = CosmosGatewayState("sdk-suite", master_key=key, record_all_versions=True)
        with serve_cosmos(state, ca) as served:
            junit = Path(tmp) / "junit.xml"
            env = {
                **os.environ,
                "ACCOUNT_HOST": served.url + "/",
                "ACCOUNT_KEY": key,
                "PYTHONPATH": os.pathsep.join([str(HERE / "stubs"), str(tests)]),
            }
            started = time.monotonic()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    *files,
                    "-q",
                    "-c",
                    str(tests / "pytest.ini"),
                    "--rootdir",
                    str(tests),
                    f"--junitxml={junit}",
                    "-o",
                    "junit_family=xunit1",
                    "--durations=15",
                ],
                cwd=tests,
                env=env,
                timeout=timeout,
                stdout=subprocess.DEVNULL if os.environ.get("SDK_SUITE_QUIET") else None,
                check=False,
            )
            report.seconds = time.monotonic() - started
        if not junit.exists():
            raise SystemExit(f"the SDK tests did not run (no {junit.name}): see pytest's output above")
        cases = list(ET.parse(junit).getroot().iter("testcase"))
    for case in cases:
        test_id = _test_id(case)
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            report.outcomes[test_id] = "failed"
            report.messages[test_id] = (problem.get("message") or "").replace("\n", " ")
        elif case.find("skipped") is not None:
            report.outcomes.setdefault(test_id, "skipped")
        else:
            report.outcomes.setdefault(test_id, "passed")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help=f"SDK test files (default: the suite, {len(SUITE)} files)")
    args = parser.parse_args()
    report = run(tuple(args.files) or SUITE)
    print(report.summary())
    if report.unexpected_failures or report.stale_excuses:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
