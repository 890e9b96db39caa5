"""The chain of trust breaks the way the cloud breaks it, and the worker/doctor say what to fix.

Each broken case is the dev stack's program with one declared value altered
(the infrastructure mistake), fed through the same plan as the passing case.
"""

from __future__ import annotations

import json
import threading
import time

import jwt
import pytest

from cosmos_export import audit, contract
from cosmos_export.contract import Output
from cosmos_export.export import ExportError, run_export
from sandbox.doubles.jwt_keys import verify_signature
from sandbox.plan import FIC
from sandbox.seed import sample_documents

from .conftest import user_fields
from .test_export_chain import assert_no_secret

ROLE_DEFINITION = "azure-native:cosmosdb:SqlResourceSqlRoleDefinition"
READ_CHANGE_FEED = next(a for a in contract.COSMOS_DATA_ACTIONS if a.endswith("/readChangeFeed"))


def verify_access_token(entra, token: str, audience: str, *, leeway: float) -> dict:
    """EntraDoubleState.verify_access_token with a clock-skew leeway."""
    verify_signature(token, entra.jwks(), algorithms=("RS256",))
    return jwt.decode(
        token,
        options={"verify_signature": False, "require": ["aud", "iss", "exp", "oid", "tid"]},
        audience=audience,
        issuer=entra.issuer,
        leeway=leeway,
    )


def steps(stdout: str) -> list[str]:
    """The doctor's step lines (its report), in order."""
    return [line for line in stdout.splitlines() if line.startswith(("ok   ", "FAIL "))]


def _export_fic(run):
    """The export app's federated credential (the restore app has its own)."""
    return run.named(FIC, f"export-{run.stack}-fic-ecs-task")


def _break_subject(run):
    fic = _export_fic(run)
    fic.inputs["subject"] = run.outputs[Output.EXECUTION_ROLE_ARN]  # wired to the wrong role
    return "700213", ["FIC subject to the task role ARN exactly (stack output taskRoleArn"]


def _break_issuer(run):
    fic = _export_fic(run)
    fic.inputs["issuer"] = fic.inputs["issuer"] + "/"  # the classic trailing slash
    return "700211", ["FIC issuer to this account's issuer exactly (stack output awsIssuer, no trailing slash)"]


def _break_audience(run):
    fic = _export_fic(run)
    fic.inputs["audiences"] = ["api://AzureADTokenExchange/"]
    return "700212", [f"Its audiences must be ['{contract.TOKEN_EXCHANGE_AUDIENCE}']"]


@pytest.mark.parametrize(
    "breakage", [_break_subject, _break_issuer, _break_audience], ids=["subject", "issuer", "audience"]
)
def test_wrong_federated_credential_fails_with_its_aadsts_code_and_doctor_names_the_fix(
    chain, fresh_run, breakage, capsys
):
    run = fresh_run()
    code, fixes = breakage(run)
    c = chain(run)
    audit.configure_logging("INFO")

    with pytest.raises(ExportError) as failed:
        run_export(c.settings(), "snapshot")
    message = str(failed.value)
    assert message.startswith(f"Entra AADSTS{code}: ")
    assert all(fix in message for fix in fixes), message
    # Entra saw the real task role's token and refused it with exactly that code.
    assert {r.outcome for r in c.entra.requests} == {f"AADSTS{code}"}
    assert all(claims["sub"] == c.plan.task_role_arn and claims["iss"] == c.plan.issuer for claims in c.sts.issued)
    # Nothing reached S3.
    assert c.s3.list_objects_v2(Bucket=c.plan.bucket, Prefix=c.prefix + "/").get("KeyCount", 0) == 0

    doctor = c.cli("doctor")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    lines = steps(doctor.stdout)
    assert lines[0].startswith("ok   aws identity: ") and c.plan.task_role_arn.split("/")[-1] in lines[0]
    # The token's claims (never the token): the values the FIC must hold.
    assert lines[1].startswith(
        f"ok   aws web identity token: iss={c.plan.issuer} sub={c.plan.task_role_arn} "
        f"aud={contract.TOKEN_EXCHANGE_AUDIENCE} alg=RS256"
    )
    assert lines[2].startswith(f"FAIL entra token exchange: Entra AADSTS{code}: ") and len(lines) == 3
    assert all(fix in lines[2] for fix in fixes)
    assert doctor.stderr.strip().splitlines()[-1] == f"error: entra token exchange: {lines[2].split(': ', 1)[1]}"
    out = capsys.readouterr()
    assert_no_secret(doctor.stdout + doctor.stderr + out.out + out.err, c)


def test_role_without_read_change_feed_gets_a_403_naming_the_action(chain, fresh_run, capsys):
    run = fresh_run()
    definitions = run.of_type(ROLE_DEFINITION)
    assert definitions, "the dev stack declares its own least-privilege role definition"
    for definition in definitions:
        for permission in definition.inputs["permissions"]:
            permission["dataActions"] = [a for a in permission["dataActions"] if a != READ_CHANGE_FEED]
    c = chain(run)
    assert all(READ_CHANGE_FEED not in a.data_actions for a in c.plan.cosmos_assignments)
    c.gateway.upsert_many(c.plan.cosmos_database, "orders", list(sample_documents(20)))
    audit.configure_logging("INFO")
    (principal,) = [a.service_principal_object_id for a in c.plan.applications if a.client_id == c.plan.client_id]

    with pytest.raises(ExportError) as failed:
        run_export(c.settings(), "snapshot")
    message = str(failed.value)
    assert message.startswith("orders: Cosmos refused the request (403/5301): ")
    assert (
        f"principal [{principal}] does not have required RBAC permissions to perform action "
        f"[{READ_CHANGE_FEED}]" in message
    )
    assert c.s3.list_objects_v2(Bucket=c.plan.bucket, Prefix=c.prefix + "/").get("KeyCount", 0) == 0

    doctor = c.cli("doctor")
    assert doctor.returncode == 1
    lines = steps(doctor.stdout)
    assert [line[:4] for line in lines] == ["ok  ", "ok  ", "ok  ", "ok  ", "ok  ", "FAIL"]  # ... cosmos key auth
    assert lines[-1].startswith("FAIL cosmos container orders: Cosmos refused the request (403/5301): ")
    assert f"perform action [{READ_CHANGE_FEED}]" in lines[-1]
    out = capsys.readouterr()
    assert_no_secret(doctor.stdout + doctor.stderr + out.out + out.err, c)


def test_tokens_expiring_mid_run_are_refreshed_and_the_run_completes(chain, capsys):
    c = chain()
    entra_lifetime, sts_lifetime = 2, 3
    c.entra.token_lifetime_seconds = entra_lifetime
    # Real Cosmos accepts minutes of clock skew on Entra tokens; the double checks exp with none, so a token the
    # client sends in its last instant would race it. One second of leeway keeps that race out while any token not
    # refreshed (the run lasts several lifetimes) is still refused.
    c.gateway.token_verifier = lambda token, audience: verify_access_token(c.entra, token, audience, leeway=1)
    # 30 pages one at a time, each held 250 ms: the run lasts over 7.5 s, more than twice both lifetimes, however
    # fast the machine and however many requests the throttler below misses.
    settings = c.settings(page_size=5, concurrency=1)
    c.gateway.response_delay["changefeed.read"] = 0.25
    # The STS minimum duration is 60 s: back-date its clock so each token is valid for only a few seconds.
    c.sts.clock_skew_seconds = -(settings.token_duration_seconds - sts_lifetime)
    docs = list(sample_documents(150))
    c.gateway.upsert_many(c.plan.cosmos_database, "orders", list(docs))
    audit.configure_logging("INFO")

    # A slow run: after every change-feed answer, the next change-feed request gets one 429 (retry after 100 ms).
    done = threading.Event()

    def served() -> int:
        stats = c.gateway.stats_dict().get("changefeed.read", {})
        return stats.get("200", 0) + stats.get("304", 0)

    def throttle() -> None:
        seen = served()
        while not done.wait(0.02):
            now = served()
            if now != seen:
                seen = now
                c.gateway.throttle_next(1, retry_after_ms=100, operation="changefeed.read")

    slow = threading.Thread(target=throttle, daemon=True)
    began = time.time()
    slow.start()
    try:
        summary = run_export(settings, "snapshot")
    finally:
        done.set()
        slow.join()
    ended = time.time()

    assert [(r.container, r.documents, r.sequence) for r in summary.containers] == [
        ("orders", 150, 1),
        ("customers", 0, 1),
    ]
    assert ended - began > 2 * max(entra_lifetime, sts_lifetime)
    exported = {d["id"]: d for d in c.exported("orders", summary.containers[0].run_id)}
    assert {i: user_fields(d) for i, d in exported.items()} == {d["id"]: d for d in docs}
    # Both kinds of token expired while the run was still going...
    assert min(claims["exp"] for claims in c.sts.issued) < ended - 1
    # ...and were replaced: several fresh AWS assertions, each accepted by Entra exactly once.
    assert c.entra.distinct_assertions() > 1
    assert c.entra.distinct_assertions() == c.entra.assertions_seen() == len(c.sts.issued)
    assert {r.outcome for r in c.entra.requests} == {"OK"}
    assert c.gateway.stats_dict()["changefeed.read"].get("429", 0) >= 5
    assert "401" not in str(c.gateway.stats_dict())
    out = capsys.readouterr()
    assert_no_secret(out.out + out.err, c)


def test_failed_run_cli_exits_1_with_the_fix_last_and_logs_only_json_lines(chain, fresh_run):
    """The ECS entrypoint: exit code, the reason on the last line, and a log stream CloudWatch can parse."""
    run = fresh_run()
    code, fixes = _break_subject(run)
    c = chain(run)
    done = c.cli("run", "--mode", "snapshot")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: Entra AADSTS{code}: ") and all(fix in last for fix in fixes)
    assert_no_secret(done.stdout + done.stderr, c)
    events = []
    for line in done.stdout.splitlines():
        try:
            events.append(json.loads(line)["event"])
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line[:160]!r}") from None
    assert events[-1] == "export_failed"
