"""run_export in-process through the whole chain of trust (STS double -> Entra double -> Cosmos double -> moto)."""

from __future__ import annotations

import io

import pytest

from cosmos_export import audit, export


def test_export_through_the_chain_of_trust(chain):
    chain.cosmos.upsert_many("shop", "orders", [{"id": f"d{i}", "pk": f"k{i % 13}"} for i in range(120)])
    summary = export.run_export(chain.settings(), "snapshot", session=chain.session)
    assert summary.documents == 120
    # The Cosmos double saw Entra tokens for the service principal the FIC maps the task role to.
    assert chain.entra.requests and all(r.outcome == "OK" for r in chain.entra.requests)
    assert len(chain.sts.issued) == chain.entra.assertions_seen()  # one fresh AWS token per Entra exchange


@pytest.mark.parametrize(
    "break_chain,reason",
    [
        (lambda c: setattr(c.sts, "federation_enabled", False), "STS: outbound identity federation is not enabled"),
        (lambda c: c.entra._apps[next(iter(c.entra._apps))].federated_credentials.clear(), "Entra AADSTS70021: "),
    ],
)
def test_broken_chain_fails_before_any_transfer_with_the_fix(chain, break_chain, reason):
    break_chain(chain)
    with pytest.raises(export.ExportError) as err:
        export.run_export(chain.settings(), "snapshot", session=chain.session)
    assert str(err.value).startswith(reason), str(err.value)
    s3 = chain.session.client("s3", endpoint_url=chain.urls["s3"])
    assert s3.list_objects_v2(Bucket=chain.bucket).get("KeyCount", 0) == 0


def test_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    with audit.Progress("orders", stream=tty) as bar:
        bar.advance(1200)
    with audit.Progress("orders", stream=pipe) as quiet:
        quiet.advance(1200)
    assert bar.enabled and "orders" in tty.getvalue() and "1200" in tty.getvalue()
    assert not quiet.enabled and pipe.getvalue() == ""
