"""The fan-out's plan, shards and commit in-process against the gateway double and moto (fanout.py), and the
CLI parsing the exact argv the state machine sends (contract.fan_out_*_command)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cosmos_export import contract, fanout, layout
from cosmos_export.cli import app
from cosmos_export.export import ExportError
from tests.reliability.harness import DB, WhenServed, make_docs, versions


def plan(world, mode="incremental", shards=3, execution="exec-1"):
    return fanout.plan_fan_out(
        world.settings(), mode, shards, execution, credential=world.credential, session=world.session, s3=world.s3
    )


def shard(world, run_id, k, n=3):
    return fanout.run_shard(
        world.settings(), run_id, f"{k}/{n}", credential=world.credential, session=world.session, s3=world.s3
    )


def commit(world, run_id):
    return fanout.commit_fan_out(world.settings(), run_id, session=world.session, s3=world.s3)


def fan_out(world, mode="incremental", shards=3, execution="exec-1"):
    document = plan(world, mode, shards, execution)
    for k in document["shards"]:
        shard(world, document["run_id"], k, shards)
    return document, commit(world, document["run_id"])


def test_plan_shards_commit_export_every_document_once_then_the_changes(world):
    docs = make_docs(900)
    world.seed(docs)
    document, results = fan_out(world, "snapshot")
    # The plan document the state machine reads: one run id, the shards to start.
    key = contract.fan_out_plan_key(world.prefix, "exec-1")
    assert json.loads(world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()) == document
    assert document["shards"] == [1, 2, 3] and layout.RUN_ID_PATTERN.match(document["run_id"])
    assert [r.documents for r in results] == [900] and results[0].sequence == 1
    got = world.committed()
    assert got.counts() == versions(docs) and got.runs == [document["run_id"]]
    # Each of the container's 4 feed ranges is read by exactly one shard and continues from the manifest.
    manifest = json.loads(
        world.s3.get_object(Bucket=world.bucket, Key=layout.manifest_key(world.target, 1))["Body"].read()
    )
    assert len(manifest["continuations"]) == 4 and all(manifest["continuations"].values())

    changed = [{**d, "v": 2} for d in docs[:100]] + make_docs(50, tag="new")
    world.seed(changed)
    document, results = fan_out(world, "incremental", shards=2, execution="exec-2")
    assert document["shards"] == [1, 2] and results[0].sequence == 2 and results[0].documents == 150
    assert world.committed().counts() == versions(docs) + versions(changed)


def test_a_split_while_a_shard_reads_is_handled_inside_the_shard(world):
    docs = make_docs(1200)
    world.seed(docs)
    document = plan(world, "snapshot", shards=2)
    run_id = document["run_id"]
    with WhenServed(world.state, "changefeed.read", 4, lambda: world.state.split(DB, world.container)) as w:
        shard(world, run_id, 1, 2)
    assert w.fired.is_set() and len(world.state.container(DB, world.container).ranges) == 5
    shard(world, run_id, 2, 2)
    commit(world, run_id)
    assert world.committed().counts() == versions(docs)
    # The next fan-out plans from the manifest's continuations (the split range's included), exactly once.
    more = make_docs(300, version=2)
    world.seed(more)
    fan_out(world, "incremental", shards=2, execution="exec-2")
    assert world.committed().counts() == versions(docs) + versions(more)


def test_a_retried_shard_replaces_its_attempt_and_commit_twice_commits_once(world):
    docs = make_docs(600)
    world.seed(docs)
    document = plan(world)
    run_id = document["run_id"]
    for k in document["shards"]:
        shard(world, run_id, k)
    shard(world, run_id, 2)  # the Map retried shard 2 after it had finished
    commit(world, run_id)
    commit(world, run_id)  # Step Functions retried the commit task: already committed, nothing more
    got = world.committed()
    assert got.manifests == 1 and got.counts() == versions(docs)


def test_commit_without_every_shard_names_the_missing_one_and_writes_nothing(world):
    world.seed(make_docs(400))
    document = plan(world)
    shard(world, document["run_id"], 1)
    shard(world, document["run_id"], 3)
    before = world.all_keys()
    with pytest.raises(ExportError) as refused:
        commit(world, document["run_id"])
    message = str(refused.value)
    assert "shard 2 has no result" in message and "nothing was written" in message
    assert f"cosmos-export run --run {document['run_id']} --shard 2/3" in message
    assert world.all_keys() == before and world.checkpoint_bytes() is None


def test_commit_refuses_a_part_that_is_not_what_the_shard_recorded(world):
    world.seed(make_docs(400))
    document = plan(world, shards=2)
    run_id = document["run_id"]
    results = [r for k in document["shards"] for r in shard(world, run_id, k, 2)]
    part = results[1].results[0].records[0]
    world.s3.delete_object(Bucket=world.bucket, Key=part.key, VersionId=part.version_id)
    before = world.all_keys()
    with pytest.raises(ExportError) as refused:
        commit(world, run_id)
    assert f"shard 2's part s3://{world.bucket}/{part.key} is missing" in str(refused.value)
    assert "--shard 2/2" in str(refused.value)
    assert world.all_keys() == before and world.checkpoint_bytes() is None


def test_commit_refuses_when_another_run_committed_since_the_plan(world):
    world.seed(make_docs(300))
    document = plan(world)
    for k in document["shards"]:
        shard(world, document["run_id"], k)
    world.run("incremental")  # a single-task run commits sequence 1 first
    with pytest.raises(ExportError, match="another run committed sequence 1 after run .* was planned"):
        commit(world, document["run_id"])
    assert world.committed().manifests == 1


def test_a_shard_of_another_shard_count_is_refused_before_reading(world):
    world.seed(make_docs(100))
    document = plan(world)
    with pytest.raises(ValueError, match=r"planned over 3 shards: use --shard 1/3"):
        shard(world, document["run_id"], 1, 4)
    with pytest.raises(ValueError, match=r"--shard '4/3': K must be between 1 and N"):
        fanout.run_shard(world.settings(), document["run_id"], "4/3", session=world.session, s3=world.s3)


@pytest.mark.parametrize(
    ("shards", "execution", "reason"),
    [
        (0, "exec-1", r"--shards 0: use 1\.\.1000"),
        (1001, "exec-1", r"--shards 1001: use 1\.\.1000"),
        (2, "a/b", r"--execution 'a/b': use the Step Functions execution name"),
    ],
)
def test_a_bad_plan_is_refused_before_anything_is_written(world, shards, execution, reason):
    with pytest.raises(ValueError, match=reason):
        plan(world, shards=shards, execution=execution)
    assert world.all_keys() == {}


# --- The CLI parses the state machine's argv ---------------------------------------


@pytest.fixture()
def calls(world, monkeypatch):
    """Record what each fan-out command is called with (the functions themselves are tested above)."""
    seen: list[tuple] = []
    monkeypatch.setattr("cosmos_export.cli._settings", lambda **flags: world.settings())
    monkeypatch.setattr(fanout, "plan_fan_out", lambda s, *a, **k: seen.append(("plan", *a)) or {"run_id": "r"})
    monkeypatch.setattr(fanout, "run_shard", lambda s, *a, **k: seen.append(("shard", *a)))
    monkeypatch.setattr(fanout, "commit_fan_out", lambda s, *a, **k: seen.append(("commit", *a)))
    return seen


def test_the_cli_takes_exactly_the_contract_commands(calls):
    runner = CliRunner()
    run_id = "20261203T101500Z-0123abcd"
    for argv in (
        contract.fan_out_plan_command("snapshot", 8, "sched-1"),
        contract.fan_out_shard_command(run_id, 3, 8),
        contract.fan_out_commit_command(run_id),
    ):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
    assert calls == [("plan", "snapshot", 8, "sched-1"), ("shard", run_id, "3/8"), ("commit", run_id)]


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["run"], "Missing option '--mode'"),
        (["run", "--shard", "1/2"], "--shard needs --run"),
        (["run", "--run", "20261203T101500Z-0123abcd"], "--run needs --shard"),
        (["run", "--mode", "snapshot", "--run", "20261203T101500Z-0123abcd", "--shard", "1/2"], "drop --mode"),
    ],
)
def test_run_flags_that_do_not_go_together_exit_2(calls, argv, reason):
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2 and reason in result.output, result.output
    assert calls == []
