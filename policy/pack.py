"""The pack's policies: thin adapters from the engine's arguments to `rules`.

Kept apart from `__main__.py` (which starts the analyzer server) so tests can
call each policy's `validate` with the same argument objects the engine builds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

try:  # run by the engine from inside policy/ (`python .`), or imported as policy.pack in tests
    import rules
except ImportError:  # pragma: no cover - depends on how the pack is loaded
    from policy import rules

PACK_NAME = "cosmos-s3-export-guardrails"


def plain(value: Any) -> Any:
    """Copy the engine's proxied properties into plain values, unknowns as rules.UNKNOWN."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key in value:
            try:
                out[key] = plain(value[key])
            except UnknownValueError:
                out[key] = rules.UNKNOWN
        return out
    if isinstance(value, Sequence):
        items = []
        for i in range(len(value)):
            try:
                items.append(plain(value[i]))
            except UnknownValueError:
                items.append(rules.UNKNOWN)
        return items
    return value


def to_rule_resource(resource: PolicyResource) -> rules.Resource:
    deps = {prop: frozenset(r.urn for r in rs) for prop, rs in (resource.property_dependencies or {}).items()}
    return rules.Resource(type=resource.resource_type, key=resource.urn, props=plain(resource.props), deps=deps)


def _report(report_violation: ReportViolation, messages: list[str]) -> None:
    for message in messages:
        report_violation(message, None)


def _no_static_credentials(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    _report(report_violation, rules.check_static_credential(args.resource_type))
    if args.resource_type == rules.T_APPLICATION:
        _report(report_violation, rules.check_application_secret(plain(args.props)))


def _federated_credential(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == rules.T_FIC:
        _report(report_violation, rules.check_federated_credential(plain(args.props)))


def _cosmos_role_definition(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == rules.T_COSMOS_ROLE_DEFINITION:
        _report(report_violation, rules.check_cosmos_role_definition(plain(args.props)))


def _task_definition(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == rules.T_TASK_DEFINITION:
        _report(report_violation, rules.check_task_definition(plain(args.props)))


def _stack(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for urn, message in rules.check_stack(to_rule_resource(r) for r in args.resources):
        report_violation(message, urn)


POLICIES = [
    ResourceValidationPolicy(
        name="no-static-credentials",
        description="No Entra password/certificate, service principal password/certificate or AWS access key, "
        "and no Entra application holding a password.",
        validate=_no_static_credentials,
    ),
    ResourceValidationPolicy(
        name="federated-credential-shape",
        description="Federated identity credentials: audience api://AzureADTokenExchange only, "
        "subject an exact IAM role ARN (no wildcard), issuer an AWS outbound federation issuer.",
        validate=_federated_credential,
    ),
    ResourceValidationPolicy(
        name="cosmos-role-read-only",
        description="Cosmos SQL role definitions grant only the worker's read data actions, or the restore "
        "writer's item actions (assignable only on restore targets, see the stack policy).",
        validate=_cosmos_role_definition,
    ),
    ResourceValidationPolicy(
        name="task-definition-no-secrets-non-root",
        description="Worker containers get no secrets, run as non-root with a read-only root filesystem.",
        validate=_task_definition,
    ),
    StackValidationPolicy(
        name="chain-of-trust-and-data-guardrails",
        description="FIC subject/issuer are the task role ARN and the account issuer; Cosmos assignments go to the "
        "service principal; the export reader never on a restore target, a writer role only on the restore targets "
        "(never a source container, its database or the account) and never to the export principal; "
        "buckets block public access, deny non-TLS, use SSE-KMS; "
        "the task role stays within the export prefix and key; every role under its stack's path with the bootstrap's "
        "permissions boundary, no wildcard action, role changes only under the boundary; iam:PassRole on the task and "
        "restore task roles only inline on the stack's own roles; operator roles trusted by exact role ARNs only (an "
        "account root only with an exact aws:PrincipalArn condition); KMS keys used only by named "
        "roles or source-bound services; alert topics are KMS-encrypted and only CloudWatch and EventBridge of this "
        "account publish; a stack running the worker alarms on stale containers and failed tasks.",
        validate=_stack,
    ),
]

ENFORCEMENT_LEVEL = EnforcementLevel.MANDATORY
