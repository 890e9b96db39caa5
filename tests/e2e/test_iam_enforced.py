"""IAM is enforced locally: the task role's declared policy decides what the worker may do in moto.

The chain creates the roles exactly as the program declares them (sandbox/iam.py) and switches moto's
authorization on, so a policy that lacks an action the worker needs, or names the wrong resource, fails
the worker with AccessDenied here as it would in AWS. What moto cannot see (conditions, KMS, the
*VersionTagging actions) stays with tests/infra/test_task_role_covers_worker.py.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from sandbox.iam import moto_policy
from sandbox.seed import sample_documents

from .test_export_chain import customers

POLICY = "aws:iam/rolePolicy:RolePolicy"


def _task_policy(run):
    return run.named(POLICY, f"export-{run.stack}-task-policy")


def _edit(run, edit) -> None:
    policy = _task_policy(run)
    document = json.loads(policy.inputs["policy"])
    for statement in document["Statement"]:
        edit(statement)
    policy.inputs["policy"] = json.dumps(document)


def _seed(c) -> None:
    c.gateway.upsert_many(c.plan.cosmos_database, "orders", list(sample_documents(50)))
    c.gateway.upsert_many(c.plan.cosmos_database, "customers", customers(5))


def _without(action: str):
    def edit(statement: dict) -> None:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        statement["Action"] = [a for a in actions if a != action]

    return edit


def test_the_declared_policy_passes_the_worker_sequence(chain):
    c = chain()
    _seed(c)
    for args in (("doctor",), ("run", "--mode", "snapshot"), ("run", "--mode", "incremental"), ("status",)):
        done = c.cli(*args)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    (manifest,) = c.manifests("orders")[-1:]
    assert c.cli("verify", "--run", manifest.run_id, "--container", "orders").returncode == 0


def test_enforcement_is_on_a_stranger_is_refused(chain, iam_moto_server):
    """Not just the worker: a caller with no identity in moto gets InvalidAccessKeyId, a signed one is checked."""
    c = chain()
    stranger = boto3.client(
        "s3",
        endpoint_url=iam_moto_server.url,
        region_name=c.plan.region,
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="not-a-key",
    )
    with pytest.raises(ClientError) as caught:
        stranger.list_objects_v2(Bucket=c.plan.bucket)
    assert caught.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    # The task role may not read outside its prefix's objects (Resource is enforced).
    with pytest.raises(ClientError) as caught:
        c.s3.put_object(Bucket=c.plan.bucket, Key="outside-the-prefix.txt", Body=b"x")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"


@pytest.mark.parametrize(
    ("edit", "what"),
    [
        (_without("s3:PutObject"), "s3:PutObject removed"),
        (
            lambda s: (
                s.update(Resource=s["Resource"].replace("/cosmos/*", "/elsewhere/*"))
                if s.get("Sid") == "ReadWriteExportObjects"
                else None
            ),
            "object resource narrowed to another prefix",
        ),
    ],
    ids=["without-put-object", "wrong-prefix"],
)
def test_a_policy_missing_what_the_worker_needs_fails_it_with_access_denied(chain, fresh_run, edit, what):
    run = fresh_run()
    _edit(run, edit)
    c = chain(run)
    _seed(c)
    done = c.cli("run", "--mode", "snapshot")
    assert done.returncode == 1, (what, done.stdout[-2000:])
    last = done.stderr.strip().splitlines()[-1]
    print(f"{what}: {last}")
    assert "AccessDenied" in last, (what, done.stderr[-2000:])
    assert c.manifests("orders") == []  # nothing committed


def test_moto_quirks_are_translated_not_the_stacks_policy(dev_run):
    declared = json.loads(_task_policy(dev_run).inputs["policy"])
    translated = moto_policy(declared)
    assert declared != translated and json.loads(_task_policy(dev_run).inputs["policy"]) == declared
    mint = next(s for s in translated["Statement"] if s["Action"] == "sts:GetWebIdentityToken")
    assert mint["Condition"]["NumericLessThanEquals"]["sts:DurationSeconds"] == "300"
    (extra,) = [s for s in translated["Statement"] if s["Sid"].endswith("MotoDeleteObjectsOnBucket")]
    assert extra == {
        "Sid": "ReadWriteExportObjectsMotoDeleteObjectsOnBucket",
        "Effect": "Allow",
        "Action": "s3:DeleteObject",
        "Resource": [f"arn:aws:s3:::{dev_run.bucket}"],
    }


def test_moto_is_blind_to_the_version_tagging_actions(chain, fresh_run):
    """The blind spot README names: the source-scanning test, not moto, proves s3:PutObjectVersionTagging."""
    run = fresh_run()
    _edit(run, _without("s3:PutObjectVersionTagging"))
    c = chain(run)
    _seed(c)
    done = c.cli("run", "--mode", "snapshot")
    assert done.returncode == 0, done.stderr[-2000:]
