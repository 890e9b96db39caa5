"""The pack's analyst rule: the analyst role reads export data and writes only Athena's results, never deletes."""

from __future__ import annotations

import json

import pytest

from components.analytics import analyst_role_policy
from policy import rules
from tests.infra.conftest import cached_run
from tests.policy.policy_engine import from_mocked_run, violations
from tests.policy.test_policy_on_mocked_stacks import _edit

BUCKET = "arn:aws:s3:::exports-bucket"


def good() -> dict:
    return analyst_role_policy(
        account_id="111122223333",
        region="eu-west-1",
        bucket="exports-bucket",
        container_prefixes=["cosmos/acct/db/orders"],
        stack="dev",
        tables=["orders_current", "orders_changes"],
    )


def test_the_program_s_analyst_policy_passes():
    assert rules.check_analyst_policy(good(), "analyst") == []
    (policy,) = [p for p in cached_run("dev").of_type(rules.T_ROLE_POLICY) if p.name == "export-dev-analyst-policy"]
    assert rules.check_analyst_policy(json.loads(policy.inputs["policy"]), "analyst") == []


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("s3:DeleteObject", f"{BUCKET}/athena-results/*"),
        ("s3:PutObject", f"{BUCKET}/cosmos/acct/db/orders/tables/*"),
        ("s3:PutObject", f"{BUCKET}/*"),
        ("s3:*", f"{BUCKET}/cosmos/*"),
        ("s3:Get*", f"{BUCKET}/cosmos/*"),
        ("*", "*"),
        ("s3:PutObjectAcl", f"{BUCKET}/athena-results/*"),
    ],
)
def test_a_write_or_delete_beyond_athena_results_is_refused(action, resource):
    doc = good()
    doc["Statement"].append({"Sid": "Extra", "Effect": "Allow", "Action": action, "Resource": resource})
    [message] = rules.check_analyst_policy(doc, "analyst")
    assert f"statement Extra allows {action!r}" in message and "may only read export data" in message


def test_the_pack_refuses_a_mocked_stack_whose_analyst_may_delete():
    resources = from_mocked_run(cached_run("dev"))
    doc = good()
    doc["Statement"].append({"Sid": "Oops", "Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"{BUCKET}/*"})
    edited = _edit(resources, rules.T_ROLE_POLICY, "export-dev-analyst-policy", policy=json.dumps(doc))
    found = [message for _, _, message in violations(edited)]
    assert any("statement Oops allows 's3:DeleteObject'" in m for m in found), found
    assert not any("analyst" in m for _, _, m in violations(resources))  # the program's own passes
