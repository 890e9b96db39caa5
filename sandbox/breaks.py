"""Deliberate infrastructure mistakes: `python -m sandbox demo|up --break NAME`.

Each break alters what the Pulumi program declared (the stack run under mocks) before the plan is
taken from it, exactly as a wrong line in components/ would; the doubles then refuse the worker the
way Entra or STS would. tests/sandbox/test_plan.py checks the same mistakes one link at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cosmos_export import contract

FIC = "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential"


@dataclass(frozen=True)
class Break:
    what: str  # the mistake, as a reviewer would describe it
    expect: str  # what the cloud (and the sandbox) answers
    alter: Callable[[Any], None]  # edits a sandbox.mocked_stack.StackRun in place


def _task_fic(run: Any) -> Any:
    (fic,) = [r for r in run.of_type(FIC) if r.inputs.get("subject") == run.task_role_arn]
    return fic


def _fic_subject(run: Any) -> None:
    _task_fic(run).inputs["subject"] = run.outputs[contract.Output.EXECUTION_ROLE_ARN]


def _fic_issuer(run: Any) -> None:
    fic = _task_fic(run)
    fic.inputs["issuer"] = fic.inputs["issuer"] + "/"


def _token_algorithm(run: Any) -> None:
    for policy in run.of_type("aws:iam/rolePolicy:RolePolicy"):
        document = json.loads(policy.inputs["policy"])
        for statement in document.get("Statement", []):
            if statement.get("Action") == "sts:GetWebIdentityToken":
                statement["Condition"]["StringEquals"]["sts:SigningAlgorithm"] = "ES384"
        policy.inputs["policy"] = json.dumps(document)


BREAKS: dict[str, Break] = {
    "fic-subject": Break(
        "the federated identity credential's subject is the execution role's ARN, not the task role's",
        "Entra AADSTS700213 (subject mismatch)",
        _fic_subject,
    ),
    "fic-issuer": Break(
        "the federated identity credential's issuer has a trailing slash",
        "Entra AADSTS700211 (issuer mismatch)",
        _fic_issuer,
    ),
    "token-algorithm": Break(
        "the task role policy allows sts:GetWebIdentityToken only with ES384, the worker asks for RS256",
        "STS AccessDenied on GetWebIdentityToken (sts:SigningAlgorithm)",
        _token_algorithm,
    ),
}


def check(name: str | None) -> None:
    if name is not None and name not in BREAKS:
        raise ValueError(f"--break {name!r} is not a modelled mistake: choose one of {', '.join(BREAKS)}")


def apply(run: Any, name: str | None) -> Any:
    """`run` with the named mistake in it (unchanged for None)."""
    check(name)
    if name is not None:
        BREAKS[name].alter(run)
    return run
