"""`cosmos-export doctor` over the whole chain of doubles: each link reported, first broken one named last."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cosmos_export import cli, contract
from cosmos_export.doctor import Doctor
from sandbox.doubles.cosmos.rbac import RoleAssignment
from tests.runtime.trust_chain import ISSUER, ROLE_ARN, SP_OBJECT_ID


def walk(chain, **overrides):
    lines: list[str] = []
    doctor = Doctor(chain.settings(**overrides), session=chain.session, echo=lines.append)
    return doctor.run(), lines


def test_healthy_chain_every_step_ok(chain):
    chain.cosmos.upsert_many("shop", "orders", [{"id": str(i), "pk": f"k{i}"} for i in range(200)])
    ok, lines = walk(chain)
    assert ok, lines
    steps = [line.split(":")[0] for line in lines]
    assert steps == [
        "ok   aws identity",
        "ok   aws web identity token",
        "ok   entra token exchange",
        "ok   cosmos account",
        "ok   cosmos key auth",
        "ok   cosmos container orders",
        "ok   change feed mode",
        "ok   s3 write probe",
    ]
    assert "assumed-role/CosmosExportTask" in lines[0]
    assert f"iss={ISSUER} sub={ROLE_ARN} aud={contract.TOKEN_EXCHANGE_AUDIENCE} alg=RS256" in lines[1]
    assert "consistency Session (minimum Session)" in lines[3]
    assert (
        lines[4]
        == "ok   cosmos key auth: account keys refused: the account accepts Entra tokens only (disableLocalAuth true)"
    )
    assert "4 feed range(s), change feed page read (1 item(s))" in lines[5]
    assert lines[6] == "ok   change feed mode: LatestVersion (no deletes between snapshots; see the warning below)"
    assert "written and deleted" in lines[7]
    assert not any("eyJ" in line for line in lines)


@pytest.mark.parametrize(
    "breakage,step,reason",
    [
        (
            lambda c: setattr(c.sts, "federation_enabled", False),
            "aws web identity token",
            "outbound identity federation is not enabled",
        ),
        (
            lambda c: c.entra._apps[next(iter(c.entra._apps))].federated_credentials.clear(),
            "entra token exchange",
            "Entra AADSTS70021",
        ),
        (
            lambda c: setattr(c.cosmos, "consistency", "Eventual"),
            "cosmos account",
            "account consistency Eventual is weaker than the required minimum Session",
        ),
    ],
)
def test_first_broken_link_is_the_last_line(chain, breakage, step, reason):
    breakage(chain)
    ok, lines = walk(chain)
    assert not ok
    assert lines[-1].startswith(f"FAIL {step}: ") and reason in lines[-1]
    assert all(line.startswith("ok   ") for line in lines[:-1])


def test_missing_role_assignment_names_the_data_actions(chain):
    chain.cosmos.role_assignments = [RoleAssignment(SP_OBJECT_ID, "/dbs/shop", contract.COSMOS_DATA_ACTIONS[:1])]
    ok, lines = walk(chain)
    assert not ok and lines[-1].startswith("FAIL cosmos container orders: Cosmos refused the request (403/5301)")
    assert "readChangeFeed" in lines[-1] or "items/read" in lines[-1] or "executeQuery" in lines[-1]


def test_cli_doctor_from_environment(chain, monkeypatch):
    for key, value in chain.env().items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli.app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == [
        "WARNING: EXPORT_CHANGE_FEED_MODE=LatestVersion: deletes are not captured between snapshots; a state rebuilt "
        "from incrementals (materialize, restore) keeps documents deleted since the last snapshot. Schedule periodic "
        "snapshots, or use AllVersionsAndDeletes (needs continuous backup)",
        "all checks passed with 1 warning(s)",
    ]

    monkeypatch.setenv(contract.Env.MIN_CONSISTENCY, "Strong")
    result = CliRunner().invoke(cli.app, ["doctor"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith(
        "error: cosmos account: account consistency Session is weaker than the required minimum Strong"
    )


def test_all_versions_mode_needs_an_account_that_serves_it(chain):
    """Without continuous backup (the double started without record_all_versions) Cosmos answers 400."""
    ok, lines = walk(chain, change_feed_mode="AllVersionsAndDeletes")
    assert not ok
    assert lines[-1] == (
        "FAIL change feed mode: EXPORT_CHANGE_FEED_MODE=AllVersionsAndDeletes but the account refuses an "
        "all-versions change feed read on orders (400: (BadRequest) Change Feed 'All Versions and Deletes' mode must be "
        "enabled.): it needs continuous backup (7 or 30 days) and the all-versions-and-deletes change feed enabled "
        "on the account. Enable them, or set EXPORT_CHANGE_FEED_MODE=LatestVersion (deletes are then not "
        "captured between snapshots)"
    )
    chain.cosmos.record_all_versions = True
    doctor = Doctor(
        chain.settings(change_feed_mode="AllVersionsAndDeletes"), session=chain.session, echo=lambda _line: None
    )
    assert doctor.run(), doctor.results
    assert doctor.results[-2].detail == (
        "AllVersionsAndDeletes: the account serves an all-versions change feed read (orders)"
    )
    assert doctor.warnings == []


def test_an_account_still_accepting_keys_is_a_warning_and_the_walk_goes_on(chain, monkeypatch):
    """A real account with key auth on refuses a made-up key for the key, not for being a key."""
    from sandbox.doubles.cosmos.gateway import CosmosError

    original = chain.cosmos.authorize
    seen: list[str] = []

    def keys_accepted(authorization, host, action, scope, **kwargs):
        if authorization and "type%3Dmaster" in authorization:
            seen.append(authorization)
            raise CosmosError(
                401,
                "Unauthorized",
                "The input authorization token can't serve the request. The wrong "
                "key is being used or the expected payload is not built as per the protocol.",
            )
        return original(authorization, host, action, scope, **kwargs)

    monkeypatch.setattr(chain.cosmos, "authorize", keys_accepted)
    ok, lines = walk(chain)
    assert ok, lines
    assert [line.split(":")[0] for line in lines][3:6] == [
        "ok   cosmos account",
        "warn cosmos key auth",
        "ok   cosmos container orders",
    ]
    assert "the account still accepts account keys (disableLocalAuth false; HTTP 401" in lines[4]
    assert "--disable-local-auth true" in lines[4]
    # One probe, signed with a made-up key that is never printed.
    (probe,) = seen
    assert probe.split("sig%3D")[1] not in "\n".join(lines)


def test_an_endpoint_checking_no_authorization_is_named(chain, monkeypatch):
    monkeypatch.setattr(chain.cosmos, "token_verifier", None)  # an emulator: any signature passes
    ok, lines = walk(chain)
    (line,) = [line for line in lines if "cosmos key auth" in line]
    assert line.startswith(
        "warn cosmos key auth: the endpoint answered HTTP 200 to a request signed with a made-up key"
    )
