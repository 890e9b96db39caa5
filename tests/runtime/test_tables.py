"""Analytics tables: DuckDB (a real client, with httpfs from PyPI) reads the current-state and change-log
Parquet straight from moto S3, with the README's queries, and the answers equal the source container.

Real servers on loopback: the Cosmos gateway double in AllVersionsAndDeletes mode and moto S3. The tables
are written by the worker itself after each committed run (EXPORT_CURRENT_STATE, on by default).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cosmos_export import layout, schema, tables
from cosmos_export.commit import CommitStore
from tests.runtime.test_export import DB, env, make_docs, run, seeded_all_versions, user  # noqa: F401  (fixture)

duckdb = pytest.importorskip("duckdb")


def target(env) -> layout.ExportTarget:
    return layout.ExportTarget(env["bucket"], "exports/test", "acct", DB, "orders")


def httpfs_path() -> str:
    """The extension inside the duckdb-extension-httpfs wheel (its package has no helper; the file is the API)."""
    import duckdb_extension_httpfs

    return str(
        Path(duckdb_extension_httpfs.__path__[0], "extensions", f"v{duckdb.__version__}", "httpfs.duckdb_extension")
    )


def connect(env):
    """DuckDB with httpfs loaded from the duckdb-extension-httpfs wheel (no download) and moto as S3."""
    con = duckdb.connect()
    con.execute(f"LOAD '{httpfs_path()}'")
    endpoint = env["settings"].s3_endpoint.removeprefix("http://")
    con.execute(
        "CREATE SECRET moto (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1', "
        f"ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)"
    )
    return con


def readme_views(con, t: layout.ExportTarget) -> None:
    """The README's DuckDB recipe: the current state through its pointer, the change log by glob."""
    pointer = f"s3://{t.bucket}/{tables.pointer_key(t)}"
    con.execute(
        f"SET VARIABLE current_files = (SELECT list(column0) FROM read_csv('{pointer}', header = false, "
        "columns = {'column0': 'VARCHAR'}))"
    )
    con.execute("CREATE OR REPLACE VIEW orders_current AS SELECT * FROM read_parquet(getvariable('current_files'))")
    con.execute(
        f"CREATE OR REPLACE VIEW orders_changes AS SELECT * FROM read_parquet("
        f"'s3://{t.bucket}/{tables.changes_root(t)}*/*.parquet', hive_partitioning = true, union_by_name = true)"
    )


def source(env) -> dict[str, dict]:
    return {d["id"]: user(d) for d in env["state"].container(DB, "orders").iter_documents()}


def test_tables_equal_the_source_after_snapshot_changes_and_incrementals(env):
    state, docs, settings = seeded_all_versions(env)
    settings = settings.model_copy(update={"cosmos_containers": ("orders",)})
    t = target(env)
    assert run(env, "snapshot", settings=settings).containers[0].sequence == 1
    # Changes: updates (one of them three times), inserts with a new field, deletes; `n` becomes a float.
    for step in (1, 2, 3):
        state.upsert(DB, "orders", {**docs[0], "n": step, "status": "open"})
    for doc in docs[1:20]:
        state.upsert(DB, "orders", {**doc, "n": doc["n"] + 0.5, "status": "paid"})
    for doc in make_docs(10, tag="new", offset=5000):
        state.upsert(DB, "orders", {**doc, "status": "open"})
    deleted = [d["id"] for d in docs[40:45]]
    for doc in docs[40:45]:
        assert state.delete(DB, "orders", doc["id"], doc["pk"])
    assert run(env, "incremental", settings=settings).containers[0].sequence == 2
    # A killed run's part: data that no manifest lists (the obvious glob over data/ would read it).
    store = CommitStore(env["s3"], t)
    first = store.committed_manifests()[0]
    killed = first.parts[0].key.replace(first.run_id, "20991231T000000Z-deadbeef")
    part = first.parts[0]
    env["s3"].copy_object(Bucket=t.bucket, Key=killed, CopySource={"Bucket": t.bucket, "Key": part.key})
    state.upsert(DB, "orders", {**docs[60], "status": "late"})
    assert run(env, "incremental", settings=settings).containers[0].sequence == 3

    manifests = store.committed_manifests()
    assert manifests[-1].columns["n"] == {"duckdb": "DOUBLE", "glue": "double"}  # integer + number: widened
    assert manifests[-1].columns["status"] == {"duckdb": "VARCHAR", "glue": "string"}
    assert tables.pointer_version(env["s3"], t) == 3
    con = connect(env)
    readme_views(con, t)
    truth = source(env)

    # Current state: one row per live document, its latest version, no deleted document.
    rows = con.execute("SELECT id, document, _sequence, _ts FROM orders_current").fetchall()
    assert len(rows) == len(truth) == 300 + 10 - 5
    got = {r[0]: user(json.loads(r[1])) for r in rows}
    assert got == truth and not set(deleted) & set(got)
    assert {r[0] for r in rows if r[2] == 3} == {docs[60]["id"]}
    # README: counts by a field (a typed column and a JSON path agree).
    by_status = dict(con.execute("SELECT status, count(*) FROM orders_current GROUP BY status").fetchall())
    assert by_status == dict(Counter(d.get("status") for d in truth.values()))
    by_json = dict(
        con.execute(
            "SELECT json_extract_string(document, '$.status'), count(*) FROM orders_current GROUP BY 1"
        ).fetchall()
    )
    assert by_json == by_status
    assert con.execute("SELECT typeof(n), typeof(status) FROM orders_current LIMIT 1").fetchone() == (
        "DOUBLE",
        "VARCHAR",
    )

    # Change log: every committed version, nothing of the killed run, deletes with their operation.
    changes = con.execute(
        "SELECT _sequence, count(*), count(*) FILTER (WHERE _operation = 'delete') FROM orders_changes GROUP BY 1 "
        "ORDER BY 1"
    ).fetchall()
    assert changes == [(m.sequence, m.documents, 5 if m.sequence == 2 else 0) for m in manifests]
    runs = {r[0] for r in con.execute("SELECT DISTINCT _run_id FROM orders_changes").fetchall()}
    assert runs == {m.run_id for m in manifests} and "20991231T000000Z-deadbeef" not in runs
    # README: changes since a date (dt is the run's start date, the partition).
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    since = con.execute(f"SELECT count(*) FROM orders_changes WHERE dt >= '{today}' AND _sequence > 1").fetchone()[0]
    assert since == sum(m.documents for m in manifests[1:])
    assert (
        con.execute(
            "SELECT _operation, _lsn IS NOT NULL FROM orders_changes WHERE id = ? AND _sequence = 2 ORDER BY _lsn",
            [docs[0]["id"]],
        ).fetchall()
        == [("replace", True)] * 3
    )
    # The latest version of every document from the change log alone equals the current state too.
    latest = con.execute(
        "SELECT id, document FROM (SELECT *, row_number() OVER (PARTITION BY _partition_key, id "
        "ORDER BY _sequence DESC, _lsn DESC) AS r FROM orders_changes) WHERE r = 1 AND NOT _deleted"
    ).fetchall()
    assert {i: user(json.loads(d)) for i, d in latest} == truth


def test_a_type_change_moves_the_column_back_to_json_and_both_tables_stay_queryable(env):
    state, docs, settings = seeded_all_versions(env, count=40)
    # SSE-KMS as in the stack (the sandbox found upload_file refusing an SSE argument the sink uses).
    key = env["session"].client("kms", endpoint_url=env["settings"].s3_endpoint).create_key()["KeyMetadata"]["Arn"]
    settings = settings.model_copy(update={"cosmos_containers": ("orders",), "kms_key_arn": key})
    t = target(env)
    run(env, "snapshot", settings=settings)
    con = connect(env)
    readme_views(con, t)
    assert con.execute("SELECT typeof(n) FROM orders_current LIMIT 1").fetchone() == ("BIGINT",)
    state.upsert(DB, "orders", {**docs[0], "n": "forty", "added": True})  # n: integer and string now
    run(env, "incremental", settings=settings)
    readme_views(con, t)
    columns = {r[0] for r in con.execute("DESCRIBE orders_current").fetchall()}
    assert "added" in columns and "n" not in columns  # new column present; `n` only in the JSON now
    assert con.execute("SELECT count(*) FROM orders_current WHERE added").fetchone() == (1,)
    assert con.execute(
        "SELECT json_extract(document, '$.n') FROM orders_current WHERE id = ?", [docs[0]["id"]]
    ).fetchone() == ('"forty"',)
    assert con.execute("SELECT count(*) FROM orders_changes").fetchone() == (41,)
    listed = env["s3"].list_objects_v2(Bucket=t.bucket, Prefix=f"{t.container_prefix}/tables/")["Contents"]
    assert {o["Key"].rsplit("/", 1)[-1] for o in listed} >= {
        "manifest",
        "part-00000.parquet",
        "sequence=0000000002.parquet",
    }
    for obj in listed:  # every table object under the export key
        head = env["s3"].head_object(Bucket=t.bucket, Key=obj["Key"])
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key, obj["Key"]


def test_promoted_columns_leave_names_glue_would_see_twice_in_the_json_and_type_values_strictly():
    # Which fields analytic_columns promotes: tests/runtime/test_layout_schema.py.
    # Names Glue would see twice, or that are the table's own columns, stay in the JSON.
    cols = schema.analytic_columns(
        {"Status": ["string"], "status": ["string"], "document": ["string"], "_ts": ["integer"], "x": ["string"]}
    )
    assert tables.promoted_columns(cols) == [("x", "VARCHAR")]
    assert tables._typed(2**64 + 1, "BIGINT") is None and tables._typed(True, "BIGINT") is None
    assert tables._typed(3, "DOUBLE") == 3.0 and tables._typed("3", "DOUBLE") is None
