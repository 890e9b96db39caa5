"""S3 faults on the write path, through a fault-injecting proxy in front of moto."""

from __future__ import annotations

import pytest

from cosmos_export import export
from cosmos_export.commit import CommitStore
from cosmos_export.storage import client_config as s3_client_config
from tests.reliability.faulty_proxy import Fault, FaultyProxy
from tests.reliability.harness import make_docs, record, versions

N = 1500


@pytest.fixture()
def proxy(moto_server):
    with FaultyProxy(moto_server.url) as p:
        yield p


def via(world, proxy):
    return world.session.client("s3", endpoint_url=proxy.url, config=s3_client_config())


def test_500_and_503_slowdown_on_part_uploads_are_retried(world, proxy):
    docs = make_docs(N)
    world.seed(docs)
    proxy.add(Fault("upload_part", "slowdown", times=4))
    proxy.add(Fault("upload_part", "internal", times=3))
    proxy.add(Fault("complete_upload", "slowdown", times=2))
    world.run("incremental", s3=via(world, proxy))
    assert proxy.injected[("upload_part", "slowdown")] == 4
    assert proxy.injected[("upload_part", "internal")] == 3
    assert proxy.injected[("complete_upload", "slowdown")] == 2
    got = world.committed()
    assert got.counts() == versions(docs) and max(got.counts().values()) == 1
    record(
        "S3 503 SlowDown x4 + 500 x3 on UploadPart, 503 x2 on CompleteMultipartUpload",
        trials=1,
        documents=len(got.docs),
        outcome="retried; committed exactly once, every part verifies",
    )


def test_connection_reset_during_multipart_upload_is_retried(world, proxy):
    docs = make_docs(N)
    world.seed(docs)
    proxy.add(Fault("upload_part", "reset", times=3))
    proxy.add(Fault("create_upload", "reset", times=1))
    world.run("incremental", s3=via(world, proxy))
    assert proxy.injected[("upload_part", "reset")] == 3
    got = world.committed()
    assert got.counts() == versions(docs)
    record(
        "S3 connection reset during multipart (UploadPart x3, CreateMultipartUpload x1)",
        trials=1,
        documents=len(got.docs),
        outcome="retried; committed exactly once, every part verifies",
    )


def test_lost_complete_response_fails_loudly_or_commits_and_rerun_is_exact(world, proxy):
    """CompleteMultipartUpload applied by S3 but its response lost: the retry finds no such upload."""
    docs = make_docs(N)
    world.seed(docs)
    proxy.add(Fault("complete_upload", "reset_after", times=1))
    try:
        world.run("incremental", s3=via(world, proxy))
        first = "committed"
    except export.ExportError as e:
        first = f"failed: {e}"
        assert "NoSuchUpload" in str(e) or "upload" in str(e).lower()
        assert world.committed().manifests == 0
        world.run("incremental", s3=via(world, proxy))
    got = world.committed()
    assert got.counts() == versions(docs)
    record(
        "S3 CompleteMultipartUpload applied but response lost (reset after)",
        trials=1,
        documents=len(got.docs),
        outcome="run fails loudly (NoSuchUpload on retry); rerun commits exactly once"
        if first != "committed"
        else "committed exactly once",
    )


def test_lost_manifest_response_is_not_double_committed(world, proxy):
    """The manifest PUT is applied but the response lost; botocore's retry gets 412 from If-None-Match."""
    docs = make_docs(N)
    world.seed(docs)
    proxy.add(Fault("put_manifest", "reset_after", times=1))
    outcome = "committed"
    try:
        world.run("incremental", s3=via(world, proxy))
    except export.ExportError as e:
        outcome = str(e)
    # Whatever the first run said, a rerun must leave every document committed exactly once.
    world.run("incremental")
    got = world.committed()
    assert got.counts() == versions(docs) and got.manifests in (1, 2)
    assert got.manifests == 1 or not world.committed().docs[N:]  # a second manifest may only be empty
    record(
        "S3 manifest PUT applied but response lost",
        trials=1,
        documents=len(got.docs),
        outcome="exactly once after rerun; first run "
        + ("committed" if outcome == "committed" else "misreported as a concurrent run"),
    )
    assert outcome == "committed", f"the run's own manifest write was reported as a lost race: {outcome!r}"


def test_checkpoint_conditional_write_conflict(world, proxy):
    """409 ConditionalRequestConflict / 412 on the checkpoint after the manifest committed: not a lost run."""
    docs = make_docs(N)
    world.seed(docs)
    proxy.add(Fault("put_checkpoint", "conflict", times=1))
    world.run("incremental", s3=via(world, proxy))
    assert proxy.injected[("put_checkpoint", "conflict")] == 1
    changes = make_docs(200, version=2)
    world.seed(changes)
    # A competing process rolls the checkpoint forward just before our conditional write (412 for us).
    other = CommitStore(world.s3, world.target)
    proxy.add(Fault("put_checkpoint", "hook", times=1, action=lambda: other.load()))
    world.run("incremental", s3=via(world, proxy))
    got = world.committed()
    assert got.counts() == versions(docs) + versions(changes) and got.manifests == 2
    state = CommitStore(world.s3, world.target).load()
    assert state.checkpoint.sequence == 2
    record(
        "S3 checkpoint conditional-write conflict (409, and 412 from a concurrent roll-forward)",
        trials=2,
        documents=len(got.docs),
        outcome="commit stands; checkpoint at the right sequence; exactly once",
    )
