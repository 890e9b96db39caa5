"""The worker's metrics: CloudWatch Embedded Metric Format documents inside its JSON log lines.

End to end through the in-process harness of test_export (Cosmos gateway double -> moto S3): the lines a
real run prints parse as EMF per AWS's specification, carry the declared dimensions and metrics with the
values the manifest records, and carry no token or secret.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import pytest

from cosmos_export import audit, contract, export, metrics
from cosmos_export.commit import CommitStore
from cosmos_export.contract import Dimension, Metric
from cosmos_export.layout import ExportTarget
from tests.runtime.test_export import DB, env, json_logs, make_docs, run  # noqa: F401  (fixtures)

#: CloudWatch's unit names (PutMetricData / EMF).
CLOUDWATCH_UNITS = {
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
}


def emf_problems(doc: dict) -> list[str]:
    """What makes `doc` not a valid EMF document (AWS "Specification: Embedded metric format")."""
    problems = []
    meta = doc.get("_aws")
    if not isinstance(meta, dict):
        return ["no _aws object"]
    if not isinstance(meta.get("Timestamp"), int) or meta["Timestamp"] < 0:
        problems.append("_aws.Timestamp is not a non-negative integer (epoch milliseconds)")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return problems + ["_aws.CloudWatchMetrics is not a non-empty list"]
    for d in directives:
        if not isinstance(d.get("Namespace"), str) or not 1 <= len(d["Namespace"]) <= 1024:
            problems.append(f"Namespace {d.get('Namespace')!r} is not a 1-1024 character string")
        for dims in d.get("Dimensions", []):
            if not isinstance(dims, list) or len(dims) > 30:
                problems.append(f"dimension set {dims!r} is not a list of at most 30 names")
                continue
            for name in dims:
                if not isinstance(doc.get(name), str) or not doc[name]:
                    problems.append(f"dimension {name!r} has no non-empty string member at the root")
        if not isinstance(d.get("Metrics"), list) or len(d["Metrics"]) > 100:
            problems.append("Metrics is not a list of at most 100 definitions")
            continue
        for m in d["Metrics"]:
            value = doc.get(m.get("Name"))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"metric {m.get('Name')!r} has no numeric member at the root (got {value!r})")
            if m.get("Unit", "None") not in CLOUDWATCH_UNITS:
                problems.append(f"metric {m.get('Name')!r} has unit {m.get('Unit')!r}, not a CloudWatch unit")
    return problems


def emf_lines(out: str) -> list[dict]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [x for x in lines if "_aws" in x]


def test_newest_ts_of_latest_version_and_all_versions_shapes():
    assert metrics.newest_ts([{"_ts": 5}, {"_ts": 9}, {"_ts": 7}]) == 9
    avad = [
        {"current": {"_ts": 11}, "metadata": {"crts": 11}},
        {"current": {}, "metadata": {"crts": 14, "operationType": "delete"}},
    ]  # a delete has no current image
    assert metrics.newest_ts(avad) == 14
    assert metrics.newest_ts([]) is None
    assert metrics.newest_ts([{"_ts": True}, {"_ts": "12"}]) is None  # not a number: ignored


def test_an_undeclared_metric_is_refused():
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['Docs'\]: add them to contract.Metric"):
        metrics.emf_record(
            stack="s",
            account="a",
            database="d",
            container="c",
            mode="snapshot",
            at=datetime.now(timezone.utc),
            values={"Docs": 1},
        )


def test_a_run_prints_valid_emf_per_container_with_the_manifest_values_and_no_secret(
    env, capsys, json_logs, monkeypatch
):
    secrets = {"testing"}  # the AWS secret key and session token the harness exports
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # Written two hours ago, the newest a little later: the lag is measured from that newest _ts.
    newest = int(time.time()) - 7200
    orders_container = env["state"].container(DB, "orders")
    orders_container.bulk_load(make_docs(449), ts=newest - 600)
    orders_container.bulk_load(make_docs(1, offset=449), ts=newest)
    settings = env["settings"].model_copy(update={"stack": "dev"})
    summary = run(env, "snapshot", settings=settings, log=audit.get_logger())
    out = capsys.readouterr().out
    found = emf_lines(out)
    assert [x[Dimension.CONTAINER] for x in found] == ["orders", "customers"]
    for doc in found:
        assert emf_problems(doc) == []
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == contract.METRICS_NAMESPACE == "CosmosExport"
        assert directive["Dimensions"] == [
            ["Stack", "Account", "Database", "Container"],
            ["Stack", "Account", "Database", "Container", "Mode"],
        ]
        assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
            "Success": "Count",
            "Failure": "Count",
            "Documents": "Count",
            "Bytes": "Bytes",
            "Parts": "Count",
            "RequestUnits": "Count",
            "RequestUnitsPerSecond": "Count/Second",
            "ThrottledRequests": "Count",
            "Seconds": "Seconds",
            **({"LagSeconds": "Seconds"} if doc["Documents"] else {}),
        }
        assert (doc["Stack"], doc["Account"], doc["Database"], doc["Mode"]) == ("dev", "acct", DB, "snapshot")
        assert abs(doc["_aws"]["Timestamp"] / 1000 - time.time()) < 60
        # Only the log line's own members beside the EMF ones: nothing else can leak through it.
        assert set(doc) - {"_aws", *contract.MODE_DIMENSIONS, *(m["Name"] for m in directive["Metrics"])} == {
            "event",
            "level",
            "timestamp",
            "container",
        }
        line = json.dumps(doc)
        assert "eyJ" not in line and not any(f'"{s}"' in line for s in secrets)

    orders, customers = found
    [result] = [c for c in summary.containers if c.container == "orders"]
    target = ExportTarget(env["bucket"], "exports/test", "acct", DB, "orders")
    [manifest] = CommitStore(env["s3"], target).committed_manifests()
    assert (orders["Success"], orders["Failure"]) == (1, 0)
    assert (orders["Documents"], orders["Bytes"], orders["Parts"]) == (450, manifest.bytes, len(manifest.parts))
    assert orders["RequestUnits"] == result.request_charge > 0 and orders["Seconds"] == result.seconds > 0
    assert orders["RequestUnitsPerSecond"] == result.ru_per_second > 0 and orders["ThrottledRequests"] == 0
    assert manifest.newest_ts == newest
    assert 7200 <= orders["LagSeconds"] <= time.time() - newest
    assert (customers["Documents"], customers["Success"]) == (0, 1) and "LagSeconds" not in customers


def test_a_stopped_run_prints_failure_for_its_container(env, capsys, json_logs):
    env["state"].upsert_many(DB, "orders", make_docs(200))
    stop = threading.Event()
    stop.set()
    with pytest.raises(export.ExportInterrupted):
        run(env, "snapshot", log=audit.get_logger(), stop=stop)
    [failed] = emf_lines(capsys.readouterr().out)  # the run stops at its first container
    assert emf_problems(failed) == []
    assert (failed[Dimension.CONTAINER], failed[Metric.SUCCESS], failed[Metric.FAILURE]) == ("orders", 0, 1)
    assert {m["Name"] for m in failed["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {"Success", "Failure"}


def test_lag_carries_over_an_empty_incremental(env, capsys, json_logs):
    """No change since the last run: the newest committed _ts stays the snapshot's, so lag keeps growing."""
    env["state"].upsert_many(DB, "orders", make_docs(50))
    settings = env["settings"].model_copy(update={"cosmos_containers": ("orders",)})
    run(env, "snapshot", settings=settings)
    later = datetime.now(timezone.utc).replace(microsecond=0)
    later = later.fromtimestamp(later.timestamp() + 3600, timezone.utc)
    capsys.readouterr()
    run(env, "incremental", settings=settings, log=audit.get_logger(), clock=lambda: later)
    [doc] = emf_lines(capsys.readouterr().out)
    target = ExportTarget(env["bucket"], "exports/test", "acct", DB, "orders")
    first, second = CommitStore(env["s3"], target).committed_manifests()
    assert second.documents == 0 and second.newest_ts == first.newest_ts is not None
    assert doc["Documents"] == 0 and doc["LagSeconds"] == later.timestamp() - first.newest_ts >= 3600
