"""Identity faults on the real chain (task role -> STS GetWebIdentityToken -> Entra -> Cosmos), worker as a subprocess."""

from __future__ import annotations

import pytest

from tests.reliability.harness import committed, make_docs, record

CONTAINER = "customers"


@pytest.fixture(scope="module")
def reference(sandbox):
    """The container's documents as a clean snapshot exports them."""
    sandbox.seed(CONTAINER, make_docs(2500, tag="idn"))
    prefix = sandbox.new_prefix()
    done = sandbox.run(prefix, CONTAINER, "snapshot")
    assert done.code == 0, done.stderr[-2000:]
    return committed(sandbox.s3, sandbox.target(prefix, CONTAINER)).counts()


@pytest.fixture()
def doubles(sandbox):
    sts, entra = sandbox.running.sts_state, sandbox.running.entra_state
    saved = (sts.clock_skew_seconds, entra.clock_skew_seconds, entra.token_lifetime_seconds)
    yield sts, entra
    sts.clock_skew_seconds, entra.clock_skew_seconds, entra.token_lifetime_seconds = saved
    sandbox.faults().clear_faults()


def snapshot(sandbox, reference, fault: str, outcome: str):
    prefix = sandbox.new_prefix()
    done = sandbox.run(prefix, CONTAINER, "snapshot")
    assert done.code == 0, done.stderr[-3000:]
    got = committed(sandbox.s3, sandbox.target(prefix, CONTAINER))
    assert got.counts() == reference
    record(fault, trials=1, documents=len(got.docs), outcome=outcome)
    return done


def test_entra_5xx_is_retried(sandbox, reference, doubles):
    _, entra = doubles
    entra.fail_next(2, status=503)
    snapshot(sandbox, reference, "Entra token endpoint 503 x2", "retried by azure-identity; committed exactly once")


def test_sts_throttling_is_retried(sandbox, reference, doubles):
    sts, _ = doubles
    sts.throttle_next(3)
    snapshot(sandbox, reference, "STS GetWebIdentityToken Throttling x3", "retried by botocore; committed exactly once")


def test_tokens_expiring_mid_run_are_refreshed(sandbox, reference, doubles):
    sts, entra = doubles
    entra.token_lifetime_seconds = 2  # every Cosmos token expires during the run
    sandbox.faults().throttle_next(40, retry_after_ms=100, operation="changefeed.read")  # stretch the run
    done = snapshot(
        sandbox,
        reference,
        "Entra access tokens living 2 s during a ~5 s run",
        "fresh AWS JWT + Entra token fetched on expiry; committed exactly once",
    )
    assert done.seconds > 2


@pytest.mark.parametrize("sts_skew, entra_skew", [(-180, 0), (180, 0), (0, -180), (0, 180)])
def test_clock_skew_of_three_minutes(sandbox, reference, doubles, sts_skew, entra_skew):
    sts, entra = doubles
    sts.clock_skew_seconds, entra.clock_skew_seconds = sts_skew, entra_skew
    snapshot(
        sandbox,
        reference,
        f"Clock skew: STS {sts_skew:+d} s, Entra {entra_skew:+d} s",
        "tokens accepted (skew within the 300 s nbf/exp leeway of Entra and Cosmos); committed exactly once",
    )


def test_skew_beyond_the_token_lifetime_fails_loudly(sandbox, doubles):
    """STS 400 s behind and Entra 400 s ahead: a 300 s assertion expired 500 s ago for Entra, beyond its 300 s leeway."""
    sts, entra = doubles
    sts.clock_skew_seconds, entra.clock_skew_seconds = -400, 400
    prefix = sandbox.new_prefix()
    done = sandbox.run(prefix, CONTAINER, "snapshot")
    assert done.code == 1
    assert done.last_line.startswith("error: Entra AADSTS700024: the client assertion expired")
    assert "EXPORT_TOKEN_DURATION_SECONDS" in done.last_line
    assert sandbox.s3.list_objects_v2(Bucket=sandbox.plan.bucket, Prefix=prefix).get("KeyCount", 0) == 0
    record(
        "Clock skew 800 s between STS and Entra (beyond the 300 s token + 300 s leeway)",
        trials=1,
        documents=0,
        outcome="exit 1: 'Entra AADSTS700024 ... check the task's clock, or raise EXPORT_TOKEN_DURATION_SECONDS'; "
        "nothing written",
    )
