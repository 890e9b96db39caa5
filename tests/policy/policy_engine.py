"""Feed resources to the pack the way the engine does: PolicyResource objects with
proxied camelCase properties (unknowns as the engine's sentinels) and property dependencies."""

from __future__ import annotations

import re
from typing import Any, Iterable

from pulumi_policy import (
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from policy import pack

_SNAKE = re.compile(r"_([a-z0-9])")


def camel_keys(value: Any) -> Any:
    """snake_case keys to the engine's camelCase, recursively; camelCase keys stay as they are.

    The Python SDK already serialises typed args under their schema (camelCase)
    names, so for the mocked program this is a guard, not a rewrite; it matters
    for props written by hand in Python style.
    """
    if isinstance(value, dict):
        return {
            (_SNAKE.sub(lambda m: m.group(1).upper(), k) if "_" in k and not k.startswith("_") else k): camel_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


def urn(stack: str, type_: str, name: str) -> str:
    return f"urn:pulumi:{stack}::cosmos-s3-export::{type_}::{name}"


def policy_resource(
    stack: str, type_: str, name: str, props: dict, property_dependencies: dict[str, list[PolicyResource]] | None = None
) -> PolicyResource:
    opts = PolicyResourceOptions(False, [], None, [], None, [], None)  # type: ignore[arg-type]  # no timeouts in mocks
    return PolicyResource(
        type_,
        unknown_checking_proxy(camel_keys(props)),
        urn(stack, type_, name),
        name,
        opts,
        None,
        None,
        [],
        property_dependencies or {},
    )


def from_mocked_run(run) -> list[PolicyResource]:
    """The registered custom resources of a mocked stack run (components are not analysed by CrossGuard)."""
    return [policy_resource(run.stack, r.type_, r.name, {**r.inputs, **r.outputs}) for r in run.resources if r.custom]


def violations(resources: Iterable[PolicyResource]) -> list[tuple[str, Any, str]]:
    """(policy name, resource name, message) for every violation the pack reports."""
    resources = list(resources)
    by_urn = {r.urn: r.name for r in resources}
    found: list[tuple[str, Any, str]] = []
    for policy in pack.POLICIES:
        if isinstance(policy, ResourceValidationPolicy):
            for r in resources:
                args = ResourceValidationArgs(r.resource_type, r.props, r.urn, r.name, r.opts, None)

                def on_resource(msg: str, _urn: Any = None, name: str = r.name, p: str = policy.name) -> None:
                    found.append((p, name, msg))

                policy.validate(args, on_resource)
        elif isinstance(policy, StackValidationPolicy):

            def on_stack(msg: str, u: Any = None, p: str = policy.name) -> None:
                found.append((p, by_urn.get(u, u), msg))

            policy.validate(StackValidationArgs(resources), on_stack)
    return found
