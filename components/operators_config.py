"""Who may start data movement by hand: the `operators` part of a stack's configuration.

Config keys (flat in the stack file, gathered into this model by config.py):

========================  ====================================================================
operators                 [{principal: <IAM role ARN>, actions: [export|restore|status]}]; none by default
operatorSessionMinutes    maximum session of every operator role (60..720, IAM's bounds; default 60)
========================  ====================================================================

Each distinct set of actions becomes one operator role of the stack (`role_kind`), trusted by
exactly the principals listed with that set. Pure functions, tested without mocks.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

#: export: an on-demand run of the export task; restore: the restore and drill task; status: read the state.
OperatorAction = Literal["export", "restore", "status"]
OPERATOR_ACTIONS: tuple[str, ...] = get_args(OperatorAction)
#: IAM's MaxSessionDuration is 1 to 12 hours. Sessions chained from another role (an SSO permission-set
#: role assuming the operator role) last at most one hour whatever this says.
SESSION_MINUTES = (60, 720)
DEFAULT_SESSION_MINUTES = 60

_IAM_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):(role|user)/([\w+=,.@/-]{1,512})$")
#: IAM Identity Center permission-set roles live under this path (aws-reserved/sso.amazonaws.com[/<region>]/).
SSO_ROLE_PATH = "/aws-reserved/sso.amazonaws.com/"


def principal_problem(arn: str) -> str | None:
    """Why this cannot be an operator principal, or None (an exact IAM role ARN)."""
    m = _IAM_ARN.match(arn) if isinstance(arn, str) else None
    if "*" in str(arn) or "?" in str(arn):
        return "must be one exact IAM role ARN, no wildcard (a wildcard would trust roles nobody listed)"
    if m is None:
        return "must be an IAM role ARN: arn:aws:iam::<12 digits>:role/<path/name>"
    if m.group(3) == "user":
        return (
            "is an IAM user: an operator is a role (an IAM Identity Center permission-set role, or an IAM role "
            "people assume); a user's access keys are long-lived secrets this project does not create or trust"
        )
    return None


def is_sso_role(arn: str) -> bool:
    """An IAM Identity Center permission-set role (AWSReservedSSO_<set>_<suffix> under aws-reserved/sso...)."""
    m = _IAM_ARN.match(arn)
    return bool(m and f"/{m.group(4)}".startswith(SSO_ROLE_PATH) and "/AWSReservedSSO_" in f"/{m.group(4)}")


def role_kind(actions: Collection[str]) -> str:
    """The operator role's name suffix for an action set: operator-export, operator-export-restore, ..."""
    return "operator-" + "-".join(a for a in OPERATOR_ACTIONS if a in actions)


class Operator(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    principal: str
    actions: list[OperatorAction] = Field(min_length=1)

    @field_validator("principal")
    @classmethod
    def _principal(cls, v: str) -> str:
        problem = principal_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("actions")
    @classmethod
    def _actions(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists an action twice; list each once")
        return v


class OperatorsConfig(BaseModel):
    """Like config.py's sections: field names are the config keys in snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    operators: list[Operator] = []
    operator_session_minutes: int = Field(default=DEFAULT_SESSION_MINUTES, ge=SESSION_MINUTES[0], le=SESSION_MINUTES[1])

    def roles(self) -> dict[str, list[str]]:
        """role kind -> the principals it trusts (sorted), one role per distinct action set."""
        out: dict[str, list[str]] = {}
        for o in self.operators:
            out.setdefault(role_kind(o.actions), []).append(o.principal)
        return {kind: sorted(ps) for kind, ps in sorted(out.items())}

    def problems(self, *, restore_enabled: bool) -> list[tuple[str, Any, str]]:
        """Rules across this model and the rest of the stack: (config key, bad value, message with the fix)."""
        out: list[tuple[str, Any, str]] = []
        principals = [o.principal for o in self.operators]
        twice = sorted({p for p in principals if principals.count(p) > 1})
        if twice:
            out.append(
                (
                    "operators",
                    twice,
                    "lists a principal more than once; give each principal one entry with all its actions",
                )
            )
        wanting = [o.principal for o in self.operators if "restore" in o.actions]
        if wanting and not restore_enabled:
            out.append(
                (
                    "operators",
                    wanting,
                    "grant 'restore' but the stack has no restore task (restore.enabled is false); "
                    "enable restore or remove 'restore' from these entries",
                )
            )
        return out


def actions_of(kind: str) -> frozenset[str]:
    """The action set of an operator role kind (the inverse of role_kind)."""
    return frozenset(kind.removeprefix("operator-").split("-"))
