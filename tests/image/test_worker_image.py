"""The worker image, built from runtime/Dockerfile and run as the task definition says, works against the sandbox.

Built once per session with buildah (tools/container_image.py: no Docker daemon; the local base
`localhost/python:3.11-slim` made by mmdebstrap and cached by recipe), then run with podman using the
dev task definition's own container settings as rendered under mocks: read-only root, a tmpfs /tmp,
user 10001, capabilities dropped, the image's entrypoint and the definition's command. Its environment
is the task definition's plus the sandbox's local endpoints and session (IAM enforced in moto), so the
image does doctor, a snapshot, the definition's own incremental command, and verify, as on Fargate.

Skipped only where it cannot run: not root, or no apt-get to install buildah/podman/mmdebstrap.
`.ci/run` runs as root (`make test` installs the tools first), so in CI it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from cosmos_export.commit import CommitStore
from cosmos_export.layout import ExportTarget
from sandbox import serve
from sandbox.demo import _s3
from sandbox.mocked_stack import run_stack
from sandbox.plan import plan_from_run
from sandbox.seed import sample_documents
from tools import container_image

CA_INSIDE = "/sandbox-ca/ca.pem"


@pytest.fixture(scope="session")
def worker_image() -> container_image.Built:
    if os.geteuid() != 0 and container_image.missing_tools():
        pytest.skip(f"not root and {', '.join(container_image.missing_tools())} missing: cannot install them")
    if container_image.missing_tools() and shutil.which("apt-get") is None:
        pytest.skip("buildah/podman/mmdebstrap missing and no apt-get to install them")
    built = container_image.build()
    print(
        f"\nworker image {built.image}: linux/{built.arch}, {built.size_bytes / 1e6:.0f} MB, "
        f"built in {built.seconds:.1f} s (buildah, layers cached between runs)"
    )
    return built


@pytest.fixture()
def sandbox(tmp_path) -> Iterator[tuple[serve.Running, dict]]:
    run = run_stack("dev")
    (container,) = json.loads(run.task_definition().inputs["containerDefinitions"])
    running = serve.start_all(tmp_path / "sandbox", plan=plan_from_run(run))
    try:
        yield running, container
    finally:
        running.stop()


def _podman(built, container, running, tmp_path, command=None) -> subprocess.CompletedProcess:
    # The sandbox's CA (a public certificate, no key) readable by user 10001, at a path of the container's.
    ca = tmp_path / "ca.pem"
    shutil.copyfile(running.ca.bundle_file, ca)
    ca.chmod(0o644)
    env = serve.worker_environment(running)
    for name in ("REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE", "EXPORT_COSMOS_TLS_VERIFY"):
        env[name] = CA_INSIDE
    env_file = tmp_path / "worker.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    env_file.chmod(0o600)
    argv = container_image.run_argv(
        built.image, container, command=command, env_file=env_file, mounts=((ca, CA_INSIDE),)
    )
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(900)
def test_image_runs_doctor_snapshot_incremental_verify_as_the_task_definition_says(worker_image, sandbox, tmp_path):
    running, container = sandbox
    plan = running.plan
    # What ECS is told, and what this run honours.
    assert container["readonlyRootFilesystem"] is True and container["user"] == "10001:10001"
    assert container["command"] == ["run", "--mode", "incremental"] and "entryPoint" not in container
    argv = container_image.run_argv(worker_image.image, container)
    assert {"--read-only", "--init"} <= set(argv) and argv[argv.index("--user") + 1] == "10001:10001"
    assert argv[argv.index("--tmpfs") + 1].startswith("/tmp:")

    gateway = running.cosmos_state
    gateway.upsert_many(plan.cosmos_database, "orders", list(sample_documents(300)))
    state = {"aws_cli_env": {**running.credentials}, "endpoints": {"s3": running.moto.url}, "region": plan.region}
    s3 = _s3(state)

    def manifests(name: str) -> list:
        target = ExportTarget(plan.bucket, plan.prefix, plan.cosmos_account, plan.cosmos_database, name)
        return CommitStore(s3, target).committed_manifests()

    for step, command in (("doctor", ["doctor"]), ("snapshot", ["run", "--mode", "snapshot"])):
        done = _podman(worker_image, container, running, tmp_path, command)
        assert done.returncode == 0, (step, done.stdout[-3000:], done.stderr[-3000:])
    assert [m.documents for m in manifests("orders")] == [300]

    gateway.upsert_many(plan.cosmos_database, "orders", list(sample_documents(20, start=300)))
    done = _podman(worker_image, container, running, tmp_path)  # the task definition's own command
    assert done.returncode == 0, done.stderr[-3000:]
    committed = manifests("orders")
    assert [(m.mode, m.documents) for m in committed] == [("snapshot", 300), ("incremental", 20)]

    for manifest in committed:
        done = _podman(
            worker_image, container, running, tmp_path, ["verify", "--run", manifest.run_id, "--container", "orders"]
        )
        assert done.returncode == 0, done.stderr[-3000:]
