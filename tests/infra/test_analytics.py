"""The analytics catalog (components/analytics.py) under mocks, every stack file with its real config.

Glue tables point at the prefixes the worker writes (cosmos_export.layout) with the right formats and
partition projection; the analyst role reads only the table prefixes and writes only Athena's results,
deletes nothing, and the bucket and key policies admit and fence it; the workgroup enforces SSE-KMS
results and the scan limit; a stack with currentState false declares none of it.
"""

from __future__ import annotations

import json

import pytest

from components import analytics, analytics_config
from components.config import ConfigError, load_stack_config
from cosmos_export import layout
from cosmos_export.contract import Output
from sandbox.mocked_stack import stack_config, stack_names
from tests.infra.conftest import cached_run

TABLE = "aws:glue/catalogTable:CatalogTable"
DATABASE = "aws:glue/catalogDatabase:CatalogDatabase"
WORKGROUP = "aws:athena/workgroup:Workgroup"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def prefixes(run) -> dict[str, str]:
    env = run.worker_environment
    account = run.config["cosmos-s3-export:cosmosAccountName"]
    return {
        c: f"{env['EXPORT_PREFIX']}/{account}/{env['EXPORT_COSMOS_DATABASE']}/{c}"
        for c in env["EXPORT_COSMOS_CONTAINERS"].split(",")
    }


def analytics_on(run) -> bool:
    return run.worker_environment["EXPORT_CURRENT_STATE"] == "true"


def test_the_stack_files_exercise_both_sides():
    on = {s: analytics_on(cached_run(s)) for s in stack_names()}
    assert any(on.values()) and not all(on.values())


@pytest.mark.parametrize("stack", stack_names())
def test_glue_tables_point_at_the_worker_layout(stack):
    run = cached_run(stack)
    if not analytics_on(run):
        assert not run.of_type(TABLE) and not run.of_type(DATABASE) and not run.of_type(WORKGROUP)
        assert run.outputs[Output.ANALYTICS_DATABASE] is None and run.outputs[Output.ANALYST_ROLE_ARN] is None
        return
    bucket = run.bucket
    (db,) = run.of_type(DATABASE)
    assert db.inputs["name"] == f"cosmos_export_{stack}" == run.outputs[Output.ANALYTICS_DATABASE]
    tables = {t.inputs["name"]: t.inputs for t in run.of_type(TABLE)}
    want = {}
    for container, prefix in prefixes(run).items():
        name = container.lower().replace("-", "_")
        want[f"{name}_current"] = prefix
        want[f"{name}_changes"] = prefix
    assert sorted(tables) == sorted(want)
    for name, prefix in want.items():
        t = tables[name]
        sd = t["storageDescriptor"]
        assert t["databaseName"] == db.inputs["name"] and t["tableType"] == "EXTERNAL_TABLE"
        assert sd["serDeInfo"]["serializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
        cols = [(c["name"], c["type"]) for c in sd["columns"]]
        if name.endswith("_current"):
            # The pointer the worker replaces in one PUT, read through the symlink input format.
            assert sd["location"] == f"s3://{bucket}/{prefix}/tables/current/_symlink/"
            assert sd["location"] + "manifest" == f"s3://{bucket}/{layout.current_pointer_key(prefix)}"
            assert sd["inputFormat"] == "org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat"
            assert cols == list(layout.TABLE_COLUMNS) and "partitionKeys" not in t
        else:
            assert sd["location"] == f"s3://{bucket}/{prefix}/tables/changes/"
            assert sd["inputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
            assert cols == list(layout.TABLE_COLUMNS + layout.CHANGE_COLUMNS)
            assert t["partitionKeys"] == [{"name": "dt", "type": "string"}]
            p = t["parameters"]
            assert p["projection.enabled"] == "true" and p["projection.dt.type"] == "date"
            assert p["projection.dt.format"] == "yyyy-MM-dd" and p["projection.dt.range"].endswith(",NOW")
            assert p["storage.location.template"] == f"s3://{bucket}/{prefix}/tables/changes/dt=${{dt}}/"
            # The template names exactly the keys the worker writes.
            from datetime import datetime, timezone

            key = layout.changes_key(prefix, datetime(2026, 12, 3, tzinfo=timezone.utc), 7)
            assert f"s3://{bucket}/{key}".startswith(p["storage.location.template"].replace("${dt}", "2026-12-03"))


@pytest.mark.parametrize("stack", stack_names())
def test_workgroup_enforces_encrypted_results_and_the_scan_limit(stack):
    run = cached_run(stack)
    if not analytics_on(run):
        return
    (wg,) = run.of_type(WORKGROUP)
    conf = wg.inputs["configuration"]
    gb = int(run.config.get("cosmos-s3-export:athenaScanLimitGb", "10"))
    assert wg.inputs["name"] == f"export-{stack}-analytics" == run.outputs[Output.ATHENA_WORKGROUP]
    assert conf["enforceWorkgroupConfiguration"] is True
    assert conf["bytesScannedCutoffPerQuery"] == gb * 1_000_000_000
    result = conf["resultConfiguration"]
    assert result["outputLocation"] == f"s3://{run.bucket}/athena-results/"
    assert result["encryptionConfiguration"] == {"encryptionOption": "SSE_KMS", "kmsKeyArn": run.kms_key_arn}
    lifecycle = run.named(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", f"export-{stack}-lifecycle"
    )
    (rule,) = [r for r in lifecycle.inputs["rules"] if r["id"] == "expire-athena-results"]
    days = int(run.config.get("cosmos-s3-export:athenaResultsDays", "7"))
    assert rule["filter"] == {"prefix": "athena-results/"} and rule["expiration"] == {"days": days}


def _allowed(policy: dict, action: str, resource: str) -> bool:
    """Does an IAM statement allow `action` on `resource` (exact or trailing-* match; no conditions judged)?"""
    for st in policy["Statement"]:
        if st["Effect"] != "Allow":
            continue
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if action in actions and any(
            r == resource or (r.endswith("*") and resource.startswith(r[:-1])) for r in resources
        ):
            return True
    return False


@pytest.mark.parametrize("stack", stack_names())
def test_analyst_role_reads_only_the_tables_and_deletes_nothing(stack):
    run = cached_run(stack)
    principals = json.loads(run.config.get("cosmos-s3-export:analystPrincipals", "[]"))
    roles = [r for r in run.of_type(ROLE) if r.name == f"export-{stack}-analyst"]
    if not principals:
        assert not roles and run.outputs[Output.ANALYST_ROLE_ARN] is None
        return
    (role,) = roles
    assert run.outputs[Output.ANALYST_ROLE_ARN] == role.outputs["arn"]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    trusted = set()
    for st in trust["Statement"]:
        assert st["Action"] == "sts:AssumeRole" and st["Effect"] == "Allow"
        trusted |= set(st.get("Condition", {}).get("ArnEquals", {}).get("aws:PrincipalArn", []))
        aws_principal = st["Principal"]["AWS"]
        trusted |= {p for p in (aws_principal if isinstance(aws_principal, list) else [aws_principal]) if ":role/" in p}
    assert trusted == set(principals)
    (p,) = [r for r in run.of_type(ROLE_POLICY) if r.inputs["role"] == role.outputs["id"]]
    policy = json.loads(p.inputs["policy"])
    bucket = f"arn:aws:s3:::{run.bucket}"
    actions = {
        a for st in policy["Statement"] for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
    }
    assert not {a for a in actions if "Delete" in a or a in ("s3:*", "s3:PutObjectAcl", "s3:PutBucketPolicy")}
    for prefix in prefixes(run).values():
        assert _allowed(policy, "s3:GetObject", f"{bucket}/{prefix}/tables/current/_symlink/manifest")
        assert _allowed(policy, "s3:GetObject", f"{bucket}/{prefix}/tables/changes/dt=2026-12-03/x.parquet")
        for other in (
            "data/dt=2026-12-03/run=r/range=0000/part-00001.jsonl.zst",
            "manifests/0000000001.json",
            "checkpoint.json",
        ):
            assert not _allowed(policy, "s3:GetObject", f"{bucket}/{prefix}/{other}")
        assert not _allowed(policy, "s3:PutObject", f"{bucket}/{prefix}/tables/current/_symlink/manifest")
    assert _allowed(policy, "s3:PutObject", f"{bucket}/athena-results/q.csv")  # Athena writes results as the caller
    (kms,) = [st for st in policy["Statement"] if st["Sid"] == "ExportKeyThroughS3"]
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": f"s3.{run.config['aws:region']}.amazonaws.com"}}
    (athena,) = [st for st in policy["Statement"] if st["Sid"] == "QueryInWorkgroup"]
    assert athena["Resource"].endswith(f":workgroup/export-{stack}-analytics")

    # The bucket policy admits it for reads and the results writes, and fences it whatever its IAM policy says.
    bp = json.loads(run.named("aws:s3/bucketPolicy:BucketPolicy", f"export-{stack}-policy").inputs["policy"])
    by_sid = {st["Sid"]: st for st in bp["Statement"]}
    arn = role.outputs["arn"]
    assert arn in by_sid["OnlyReadersReadObjects"]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    assert arn not in by_sid["OnlyDeletersDeleteObjects"]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    fence = by_sid["AnalystsReadOnlyTables"]
    assert fence["Effect"] == "Deny" and fence["Condition"] == {"ArnEquals": {"aws:PrincipalArn": [arn]}}
    assert sorted(fence["NotResource"]) == sorted(
        [f"{bucket}/{p}/tables/*" for p in prefixes(run).values()] + [f"{bucket}/athena-results/*"]
    )
    assert by_sid["AnalystsWriteOnlyQueryResults"]["NotResource"] == f"{bucket}/athena-results/*"
    key = json.loads(run.named("aws:kms/key:Key", f"export-{stack}-key").inputs["policy"])
    decrypt = next(st for st in key["Statement"] if st["Sid"] == "ReadersAndWritersDecrypt")
    assert arn in decrypt["Condition"]["ArnEquals"]["aws:PrincipalArn"]
    assert decrypt["Condition"]["StringEquals"]["kms:ViaService"] == f"s3.{run.config['aws:region']}.amazonaws.com"


def test_config_errors_name_the_key_the_value_and_the_fix():
    with pytest.raises(ConfigError) as err:
        cfg = stack_config(
            "dev",
            {
                "analystPrincipals": ["arn:aws:iam::111122223333:user/alice", "arn:aws:iam::*:role/x"],
                "athenaScanLimitGb": 0,
            },
        )
        load_stack_config(cfg.get, "dev", cfg)
    text = str(err.value)
    assert "cosmos-s3-export:analystPrincipals" in text and "is an IAM user" in text and "no wildcard" in text
    assert 'cosmos-s3-export:athenaScanLimitGb = "0"' in text and "use 1..10000" in text
    with pytest.raises(ConfigError) as err:
        cfg = stack_config("dev", {"currentState": False})
        load_stack_config(cfg.get, "dev", cfg)
    assert "cosmos-s3-export:analystPrincipals = [" in str(err.value)
    assert "set currentState to true or remove analystPrincipals" in str(err.value)


def test_pure_names_and_policy():
    assert analytics_config.glue_name("Order-Lines.v2") == "order_lines_v2"
    assert analytics.table_names("order-lines") == ("order_lines_current", "order_lines_changes")
    assert analytics.table_read_prefixes(["p/a/d/c"]) == ["p/a/d/c/tables/"]
