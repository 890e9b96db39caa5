"""Pure validation rules of the CrossGuard pack, testable without the engine.

Every rule takes plain Python values (resource properties in the engine's
camelCase, as `pulumi preview` hands them to a policy pack) and returns the
list of violation messages: empty means compliant.

Values the engine cannot know during a preview (for example an ARN of a
resource not created yet) arrive as the `UNKNOWN` sentinel. A rule never
guesses about them: it relies on the property's dependencies instead (the
engine says which resource a property was computed from), or skips the check;
CrossGuard runs the same policies again during `pulumi up`, when the values
are known.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, TypeGuard

from cosmos_export import contract


class _Unknown:
    def __repr__(self) -> str:
        return "<unknown during preview>"


#: Stand-in for a value the engine cannot know during a preview.
UNKNOWN: Any = _Unknown()

# --- Resource type tokens (checked against the installed provider packages) ---

T_BUCKET = "aws:s3/bucket:Bucket"
T_PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
T_BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
T_BUCKET_SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
T_BUCKET_SSE_V2 = "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2"
T_ROLE = "aws:iam/role:Role"
T_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
T_POLICY = "aws:iam/policy:Policy"
T_ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
T_TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
T_KMS_KEY = "aws:kms/key:Key"
T_OUTBOUND_FEDERATION = "aws:iam/outboundWebIdentityFederation:OutboundWebIdentityFederation"
T_FIC = "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential"
T_SERVICE_PRINCIPAL = "azuread:index/servicePrincipal:ServicePrincipal"
T_COSMOS_ROLE_DEFINITION = "azure-native:cosmosdb:SqlResourceSqlRoleDefinition"
T_COSMOS_ROLE_ASSIGNMENT = "azure-native:cosmosdb:SqlResourceSqlRoleAssignment"
T_SNS_TOPIC = "aws:sns/topic:Topic"
T_SNS_TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"
T_METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
T_EVENT_RULE = "aws:cloudwatch/eventRule:EventRule"
#: The only services that may publish to an alert topic.
ALERT_PUBLISHERS = frozenset({"cloudwatch.amazonaws.com", "events.amazonaws.com"})

#: Resources that are, or mint, a static credential. None may exist.
STATIC_CREDENTIAL_TYPES: Mapping[str, str] = {
    "azuread:index/applicationPassword:ApplicationPassword": "an Entra client secret",
    "azuread:index/applicationCertificate:ApplicationCertificate": "an Entra client certificate",
    "azuread:index/servicePrincipalPassword:ServicePrincipalPassword": "a service principal secret",
    "azuread:index/servicePrincipalCertificate:ServicePrincipalCertificate": "a service principal certificate",
    "aws:iam/accessKey:AccessKey": "an AWS access key",
    "aws:iam/userLoginProfile:UserLoginProfile": "an AWS console password",
}


@dataclass(frozen=True)
class Resource:
    """One resource of a stack as a stack policy sees it.

    `key` identifies it (the URN in the engine, any unique name in tests);
    `deps` maps a property name to the keys of the resources it was computed from.
    """

    type: str
    key: str
    props: Mapping[str, Any]
    deps: Mapping[str, frozenset[str]] = field(default_factory=dict)


def known(value: Any) -> TypeGuard[Any]:
    """Set and resolved (a preview leaves outputs unknown); narrows away None for the type checker."""
    return value is not UNKNOWN and value is not None


def _s(resource: Resource) -> str:
    return f"{resource.type.rsplit(':', 1)[-1]} '{resource.key}'"


# --- Resource rules -----------------------------------------------------------


def check_static_credential(type_: str) -> list[str]:
    what = STATIC_CREDENTIAL_TYPES.get(type_)
    if what is None:
        return []
    return [
        f"{type_} creates {what}; this project allows no static credential: "
        "use workload identity federation (federated identity credential / IAM role) instead"
    ]


_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


def check_federated_credential(props: Mapping[str, Any]) -> list[str]:
    """A federated identity credential that only an AWS-issued token for one role can use."""
    errors = []
    audiences = props.get("audiences")
    if known(audiences) and list(audiences) != [contract.TOKEN_EXCHANGE_AUDIENCE]:
        errors.append(
            f"federated identity credential audiences are {list(audiences)!r}; "
            f"they must be exactly [{contract.TOKEN_EXCHANGE_AUDIENCE!r}]"
        )
    subject = props.get("subject")
    if known(subject):
        if not subject or "*" in subject or "?" in subject:
            errors.append(
                f"federated identity credential subject {subject!r} is empty or a wildcard; "
                "it must be the task role ARN exactly"
            )
        elif not _ROLE_ARN.match(subject):
            errors.append(
                f"federated identity credential subject {subject!r} is not an IAM role ARN; "
                "it must be the task role ARN exactly"
            )
    if "claimsMatchingExpression" in props and props["claimsMatchingExpression"] is not None:
        errors.append(
            "federated identity credential uses a claims matching expression (flexible credential); "
            "Entra does not accept AWS tokens on those: set subject to the task role ARN"
        )
    issuer = props.get("issuer")
    if known(issuer) and not re.match(contract.AWS_ISSUER_PATTERN, issuer):
        errors.append(
            f"federated identity credential issuer {issuer!r} is not an AWS outbound federation issuer "
            "(https://<uuid>.tokens.sts.global.api.aws, no trailing slash)"
        )
    return errors


def cosmos_role_data_actions(props: Mapping[str, Any]) -> list[Any]:
    actions: list[Any] = []
    permissions = props.get("permissions")
    if not known(permissions):
        return actions
    for permission in permissions:
        data_actions = permission.get("dataActions") if known(permission) else UNKNOWN
        if not known(data_actions):
            continue
        actions.extend(data_actions)
    return actions


def check_cosmos_role_definition(props: Mapping[str, Any]) -> list[str]:
    """A custom Cosmos SQL role is the export reader or the restore writer: no action beyond either set.

    Where a writer role may be assigned (only on the restore targets) is the stack rule
    `check_restore_assignments`.
    """
    actions = [a for a in cosmos_role_data_actions(props) if known(a)]
    reader, writer = set(contract.COSMOS_DATA_ACTIONS), set(contract.COSMOS_RESTORE_DATA_ACTIONS)
    if set(actions) <= reader or set(actions) <= writer:
        return []
    bad = [a for a in actions if a not in reader]
    return [
        f"Cosmos SQL role definition grants {bad!r}, outside the worker's read-only actions; "
        f"allowed are only {list(contract.COSMOS_DATA_ACTIONS)!r} (the export reader) or a subset of "
        f"{list(contract.COSMOS_RESTORE_DATA_ACTIONS)!r} (the restore writer, assignable only on restore targets)"
    ]


_SUSPICIOUS_NAME = re.compile(r"KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|CONNECTION_?STRING", re.I)
_SUSPICIOUS_VALUE = [
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+"), "a JWT"),
    (re.compile(r"AccountKey=|SharedAccessKey=|client_secret=", re.I), "a connection string with a key"),
    (re.compile(r"^[A-Za-z0-9+/]{86}==$"), "a Cosmos DB account key"),
]
#: The worker's own settings are never secrets (contract.Env says so), even
#: when their names contain KEY or TOKEN (EXPORT_KMS_KEY_ARN, ...).
_CONTRACT_ENV = {v for k, v in vars(contract.Env).items() if k.isupper()}
_ROOT_USERS = {"root", "0"}


def check_task_definition(props: Mapping[str, Any]) -> list[str]:
    """Containers get no secret, in `secrets` or in plain environment, and run as non-root read-only."""
    raw = props.get("containerDefinitions")
    if not known(raw):
        return []
    try:
        containers = json.loads(raw) if isinstance(raw, str) else list(raw)
    except ValueError as exc:
        return [f"task definition containerDefinitions is not valid JSON: {exc}"]
    errors = []
    for c in containers:
        name = c.get("name", "?")
        if c.get("secrets"):
            refs = [s.get("name") for s in c["secrets"]]
            errors.append(
                f"container '{name}' has secrets {refs!r}; the worker needs no secret "
                "(it federates its identity): remove them"
            )
        for env in c.get("environment") or []:
            key, value = env.get("name", ""), env.get("value")
            if not value:
                continue
            if key not in _CONTRACT_ENV and _SUSPICIOUS_NAME.search(key):
                errors.append(
                    f"container '{name}' sets environment variable {key!r} with a value; "
                    "its name suggests a secret, and the worker takes none: remove it"
                )
                continue
            for pattern, what in _SUSPICIOUS_VALUE:
                if pattern.search(str(value)):
                    errors.append(
                        f"container '{name}' environment variable {key!r} holds what looks like {what}: remove it"
                    )
                    break
        user = c.get("user")
        if not user or str(user).split(":")[0] in _ROOT_USERS:
            errors.append(f"container '{name}' runs as user {user!r}; set a non-root user (e.g. \"10001:10001\")")
        if c.get("readonlyRootFilesystem") is not True:
            errors.append(
                f"container '{name}' has readonlyRootFilesystem={c.get('readonlyRootFilesystem')!r}; it must be true"
            )
        if c.get("privileged"):
            errors.append(f"container '{name}' is privileged; it must not be")
    return errors


# --- IAM policy documents -----------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def parse_policy(document: Any) -> dict[str, Any] | None:
    """A policy document as a dict, or None when unknown during preview."""
    if not known(document):
        return None
    if isinstance(document, str):
        return json.loads(document)
    return dict(document)


@dataclass(frozen=True)
class ExportScope:
    """What the task role may touch: the export bucket's prefix and its KMS key."""

    bucket: str
    prefix: str
    kms_key_arns: frozenset[str]

    def allows(self, resource: str) -> bool:
        if resource in self.kms_key_arns:
            return True
        bucket_arn = f"arn:aws:s3:::{self.bucket}"
        prefix = self.prefix.strip("/")
        # The bucket ARN itself is needed for ListBucket (narrowed by an s3:prefix condition).
        if resource == bucket_arn:
            return True
        return bool(prefix) and resource.startswith(f"{bucket_arn}/{prefix}/")


#: Actions whose only resource form is "*" and that the task role needs.
_STAR_ONLY_ACTIONS = {"sts:GetWebIdentityToken"}
#: What the task role may do on the bucket itself (not its objects): list, nothing that changes the bucket.
BUCKET_LEVEL_ACTIONS = frozenset({"s3:ListBucket", "s3:ListBucketMultipartUploads"})


def check_task_role_policy(document: Mapping[str, Any], scope: ExportScope, where: str) -> list[str]:
    """Every Allow statement stays within the export prefix and key (or is the conditioned token call)."""
    errors = []
    for i, st in enumerate(_as_list(document.get("Statement"))):
        if st.get("Effect") != "Allow":
            continue
        label = f"{where} statement {st.get('Sid') or i}"
        if "NotAction" in st or "NotResource" in st:
            errors.append(f"{label} uses NotAction/NotResource; list the allowed actions and resources instead")
            continue
        actions = [str(a) for a in _as_list(st.get("Action"))]
        resources = [str(r) for r in _as_list(st.get("Resource"))]
        wild = [a for a in actions if a == "*" or a.endswith(":*")]
        if wild:
            errors.append(f"{label} allows wildcard actions {wild!r}; name the exact actions")
        if "*" in resources:
            if set(actions) <= _STAR_ONLY_ACTIONS:
                condition = st.get("Condition") or {}
                audience = (condition.get("ForAllValues:StringEquals") or {}).get("sts:IdentityTokenAudience")
                if _as_list(audience) != [contract.TOKEN_EXCHANGE_AUDIENCE]:
                    errors.append(
                        f"{label} allows sts:GetWebIdentityToken without the condition "
                        f"ForAllValues:StringEquals sts:IdentityTokenAudience = {contract.TOKEN_EXCHANGE_AUDIENCE!r}"
                    )
            else:
                errors.append(f'{label} allows {actions!r} on Resource "*"; scope it to the export prefix and key')
            resources = [r for r in resources if r != "*"]
        bucket_arn = f"arn:aws:s3:::{scope.bucket}"
        bucket_actions = sorted(set(a for a in actions if a.startswith("s3:")) - BUCKET_LEVEL_ACTIONS)
        if bucket_arn in resources and bucket_actions:
            errors.append(
                f"{label} allows {bucket_actions!r} on the bucket {bucket_arn} itself; "
                f"only {sorted(BUCKET_LEVEL_ACTIONS)!r} belong there, object actions go on the prefix"
            )
        outside = [r for r in resources if not scope.allows(r)]
        if outside:
            errors.append(
                f"{label} grants {outside!r}, outside the export prefix "
                f"arn:aws:s3:::{scope.bucket}/{scope.prefix.strip('/')}/* and the export KMS key"
            )
    return errors


def check_bucket_policy_denies_insecure_transport(document: Mapping[str, Any]) -> bool:
    for st in _as_list(document.get("Statement")):
        if st.get("Effect") != "Deny":
            continue
        secure = ((st.get("Condition") or {}).get("Bool") or {}).get("aws:SecureTransport")
        principal = st.get("Principal")
        everyone = principal == "*" or (isinstance(principal, dict) and _as_list(principal.get("AWS")) == ["*"])
        if str(_as_list(secure)[0] if secure is not None else "").lower() == "false" and everyone:
            return True
    return False


# --- Stack rules ------------------------------------------------------------------


class Stack:
    """Index over a stack's resources for the cross-resource rules."""

    def __init__(self, resources: Iterable[Resource]):
        self.resources = list(resources)
        self.by_key = {r.key: r for r in self.resources}

    def of_type(self, *types: str) -> list[Resource]:
        return [r for r in self.resources if r.type in types]

    def refers_to(self, source: Resource, prop: str, target: Resource, *target_props: str) -> bool:
        """Whether `source.prop` is `target` (by dependency, or by an equal known value)."""
        if target.key in source.deps.get(prop, frozenset()):
            return True
        value = source.props.get(prop)
        if not known(value):
            return False
        return any(known(target.props.get(p)) and target.props.get(p) == value for p in target_props)

    def task_roles(self) -> list[Resource]:
        roles = self.of_type(T_ROLE)
        found = [
            role
            for td in self.of_type(T_TASK_DEFINITION)
            for role in roles
            if self.refers_to(td, "taskRoleArn", role, "arn")
        ]
        # Several task definitions may share a role (the export and the scheduled-snapshot ones).
        return [r for i, r in enumerate(found) if all(r.key != f.key for f in found[:i])]


def check_stack(resources: Iterable[Resource]) -> list[tuple[str, str]]:
    """All cross-resource rules; returns (resource key, message) pairs."""
    stack = Stack(resources)
    violations: list[tuple[str, str]] = []
    for rule in (
        check_federation_chain,
        check_cosmos_assignments,
        check_restore_assignments,
        check_buckets,
        check_task_role_scope,
        check_program_roles,
        check_pass_role_grants,
        check_operator_trusts,
        check_analyst_roles,
        check_alerting,
    ):
        violations.extend(rule(stack))
    return violations


def check_federation_chain(stack: Stack) -> list[tuple[str, str]]:
    """Each federated credential's subject is the task role ARN and its issuer the account issuer."""
    out: list[tuple[str, str]] = []
    fics = stack.of_type(T_FIC)
    if not fics:
        return out
    task_roles = stack.task_roles()
    federations = stack.of_type(T_OUTBOUND_FEDERATION)
    for fic in fics:
        if not task_roles:
            out.append(
                (
                    fic.key,
                    f"{_s(fic)} exists but no ECS task definition's taskRoleArn names a role of this stack: "
                    "its subject cannot be checked against the task role",
                )
            )
        elif not any(stack.refers_to(fic, "subject", role, "arn") for role in task_roles):
            if known(fic.props.get("subject")) or fic.deps.get("subject"):
                arns = [r.props.get("arn") for r in task_roles]
                out.append(
                    (
                        fic.key,
                        f"{_s(fic)} subject {fic.props.get('subject')!r} is not the task role ARN "
                        f"{arns!r}; take it from the task role's arn output",
                    )
                )
        if federations and not any(stack.refers_to(fic, "issuer", f, "issuerIdentifier") for f in federations):
            if known(fic.props.get("issuer")) or fic.deps.get("issuer"):
                issuers = [f.props.get("issuerIdentifier") for f in federations]
                out.append(
                    (
                        fic.key,
                        f"{_s(fic)} issuer {fic.props.get('issuer')!r} is not the account's outbound "
                        f"federation issuer {issuers!r}; take it from issuerIdentifier",
                    )
                )
    return out


def check_cosmos_assignments(stack: Stack) -> list[tuple[str, str]]:
    """Every Cosmos assignment goes to the service principal, with a read-only role."""
    out = []
    sps = stack.of_type(T_SERVICE_PRINCIPAL)
    definitions = stack.of_type(T_COSMOS_ROLE_DEFINITION)
    reader = contract.COSMOS_BUILTIN_DATA_READER_ROLE_ID
    for a in stack.of_type(T_COSMOS_ROLE_ASSIGNMENT):
        if not any(stack.refers_to(a, "principalId", sp, "objectId") for sp in sps):
            if known(a.props.get("principalId")) or a.deps.get("principalId"):
                ids = [sp.props.get("objectId") for sp in sps]
                out.append(
                    (
                        a.key,
                        f"{_s(a)} principalId {a.props.get('principalId')!r} is not the service "
                        f"principal's object id {ids!r}",
                    )
                )
        role_id = a.props.get("roleDefinitionId")
        ours = any(stack.refers_to(a, "roleDefinitionId", d, "id") for d in definitions)
        builtin_reader = known(role_id) and str(role_id).rstrip("/").endswith(f"/sqlRoleDefinitions/{reader}")
        if not ours and not builtin_reader and (known(role_id) or a.deps.get("roleDefinitionId")):
            out.append(
                (
                    a.key,
                    f"{_s(a)} roleDefinitionId {role_id!r} is neither this stack's read-only role "
                    f"definition nor the built-in Data Reader ({reader})",
                )
            )
    return out


def _sse_is_kms(rule: Any) -> bool:
    if not known(rule):
        return False
    default = rule.get("applyServerSideEncryptionByDefault") or {}
    return default.get("sseAlgorithm") in ("aws:kms", "aws:kms:dsse")


def check_buckets(stack: Stack) -> list[tuple[str, str]]:
    out = []
    pabs = stack.of_type(T_PUBLIC_ACCESS_BLOCK)
    policies = stack.of_type(T_BUCKET_POLICY)
    sses = stack.of_type(T_BUCKET_SSE, T_BUCKET_SSE_V2)
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for b in stack.of_type(T_BUCKET):
        mine = lambda rs: [r for r in rs if stack.refers_to(r, "bucket", b, "bucket", "id")]  # noqa: E731, B023  # used in this iteration only
        my_pabs = mine(pabs)
        if not my_pabs:
            out.append((b.key, f"{_s(b)} has no BucketPublicAccessBlock; add one with all four blocks true"))
        for pab in my_pabs:
            # UNKNOWN during preview is given the benefit of the doubt: `pulumi up` re-checks it.
            off = [f for f in flags if pab.props.get(f) is not True and pab.props.get(f) is not UNKNOWN]
            if off:
                out.append((pab.key, f"{_s(pab)} for {_s(b)} leaves {off!r} off; all four must be true"))
        my_policies = mine(policies)
        documents = [parse_policy(p.props.get("policy")) for p in my_policies]
        if not my_policies:
            out.append((b.key, f"{_s(b)} has no bucket policy; add one denying aws:SecureTransport=false"))
        elif all(d is not None for d in documents) and not any(
            check_bucket_policy_denies_insecure_transport(d) for d in documents if d is not None
        ):
            out.append((b.key, f"{_s(b)} bucket policy does not deny requests with aws:SecureTransport=false"))
        inline = b.props.get("serverSideEncryptionConfiguration")
        inline_kms = known(inline) and _sse_is_kms(inline.get("rule"))
        separate = []
        for sse in mine(sses):
            rules = sse.props.get("rules")
            separate.extend(_as_list(rules) if known(rules) else [UNKNOWN])
        if not inline_kms and not any(_sse_is_kms(r) or r is UNKNOWN for r in separate):
            out.append(
                (
                    b.key,
                    f"{_s(b)} is not encrypted with SSE-KMS; configure sseAlgorithm 'aws:kms' with the export KMS key",
                )
            )
    return out


def _export_scope(stack: Stack) -> ExportScope | None:
    """The export bucket, prefix and key, as the task definition tells the worker."""
    env: dict[str, Any] = {}
    for td in stack.of_type(T_TASK_DEFINITION):
        raw = td.props.get("containerDefinitions")
        if not known(raw):
            return None
        for c in json.loads(raw) if isinstance(raw, str) else raw:
            env.update({e.get("name"): e.get("value") for e in c.get("environment") or []})
    bucket, prefix = env.get(contract.Env.BUCKET), env.get(contract.Env.PREFIX)
    if not bucket or not prefix:
        return None
    keys = {env[contract.Env.KMS_KEY_ARN]} if env.get(contract.Env.KMS_KEY_ARN) else set()
    keys |= {k.props["arn"] for k in stack.of_type(T_KMS_KEY) if known(k.props.get("arn")) and not keys}
    return ExportScope(bucket=bucket, prefix=prefix, kms_key_arns=frozenset(keys))


def check_task_role_scope(stack: Stack) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    task_roles = stack.task_roles()
    if not task_roles:
        return out
    scope = _export_scope(stack)
    if scope is None:
        if stack.of_type(T_TASK_DEFINITION) and all(
            known(td.props.get("containerDefinitions")) for td in stack.of_type(T_TASK_DEFINITION)
        ):
            out.append(
                (
                    task_roles[0].key,
                    f"the task definition does not set {contract.Env.BUCKET} and "
                    f"{contract.Env.PREFIX}: the task role's scope cannot be checked",
                )
            )
        return out
    documents: list[tuple[Resource, str, Any]] = []
    for role in task_roles:
        inline_policies = role.props.get("inlinePolicies")
        for i, inline in enumerate(inline_policies if known(inline_policies) else []):
            documents.append((role, f"{_s(role)} inline policy {inline.get('name') or i}", inline.get("policy")))
        for rp in stack.of_type(T_ROLE_POLICY):
            if stack.refers_to(rp, "role", role, "name", "id"):
                documents.append((rp, _s(rp), rp.props.get("policy")))
        for att in stack.of_type(T_ROLE_POLICY_ATTACHMENT):
            if not stack.refers_to(att, "role", role, "name", "id"):
                continue
            managed = [p for p in stack.of_type(T_POLICY) if stack.refers_to(att, "policyArn", p, "arn")]
            if managed:
                documents.extend((att, _s(p), p.props.get("policy")) for p in managed)
            elif known(att.props.get("policyArn")) or att.deps.get("policyArn"):
                out.append(
                    (
                        att.key,
                        f"{_s(att)} attaches {att.props.get('policyArn')!r} to the task role; "
                        "only this stack's own export policy may be attached",
                    )
                )
    for owner, where, document in documents:
        parsed = parse_policy(document)
        if parsed is not None:
            out.extend((owner.key, msg) for msg in check_task_role_policy(parsed, scope, where))
    return out


# --- The restore identity ------------------------------------------------------------------


def _environments(stack: Stack) -> list[dict[str, Any]] | None:
    """Every container environment of every task definition; None while one is unknown (preview)."""
    out = []
    for td in stack.of_type(T_TASK_DEFINITION):
        raw = td.props.get("containerDefinitions")
        if not known(raw):
            return None
        for c in json.loads(raw) if isinstance(raw, str) else raw:
            out.append({e.get("name"): e.get("value") for e in c.get("environment") or []})
    return out


def _source_and_target_containers(envs: list[dict[str, Any]]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(database, container) of every exported source, and of every restore target, as the tasks are told."""
    sources, targets = set(), set()
    for env in envs:
        db = env.get(contract.Env.COSMOS_DATABASE)
        for c in str(env.get(contract.Env.COSMOS_CONTAINERS) or "").split(","):
            if db and c.strip():
                sources.add((db, c.strip()))
        target_db = env.get(contract.Env.RESTORE_TARGET_DATABASE)
        for pair in str(env.get(contract.Env.RESTORE_TARGETS) or "").split(","):
            _, sep, target = pair.partition("=")
            if target_db and sep and target.strip():
                targets.add((target_db, target.strip()))
    return sources, targets


def _assigned_actions(stack: Stack, assignment: Resource) -> list[str] | None:
    """The data actions of the role an assignment grants; None when they cannot be known (yet)."""
    role_id = assignment.props.get("roleDefinitionId")
    if known(role_id) and str(role_id).rstrip("/").endswith(
        f"/sqlRoleDefinitions/{contract.COSMOS_BUILTIN_DATA_READER_ROLE_ID}"
    ):
        return list(contract.COSMOS_BUILTIN_DATA_READER_ACTIONS)
    for definition in stack.of_type(T_COSMOS_ROLE_DEFINITION):
        if stack.refers_to(assignment, "roleDefinitionId", definition, "id"):
            actions = cosmos_role_data_actions(definition.props)
            return [str(a) for a in actions] if all(known(a) for a in actions) else None
    if known(role_id) and str(role_id).rstrip("/").endswith("/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002"):
        return ["Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/*"]  # built-in Data Contributor
    return None


_SCOPE = re.compile(r"/databaseAccounts/[^/]+(?:/dbs/(?P<db>[^/]+)(?:/colls/(?P<coll>[^/]+))?)?/?$")


def _scope_of(assignment: Resource) -> tuple[str | None, str | None] | None:
    """(database, container) of an assignment scope; (None, None) is the account; None when unknown."""
    scope = assignment.props.get("scope")
    if not known(scope):
        return None
    m = _SCOPE.search(str(scope))
    if not m:
        return None
    return m.group("db"), m.group("coll")


def check_restore_assignments(stack: Stack) -> list[tuple[str, str]]:
    """The export identity only reads and never on a restore target; the writer only on the restore targets.

    Sources and targets are what the task definitions tell the worker (EXPORT_COSMOS_DATABASE/CONTAINERS and
    EXPORT_RESTORE_TARGET_DATABASE/TARGETS). A role granting any action beyond the read-only set is a writer.
    """
    envs = _environments(stack)
    if envs is None:
        return []  # judged again during `pulumi up`, when the task definitions are known
    sources, targets = _source_and_target_containers(envs)
    target_dbs = {db for db, _ in targets}
    reader = set(contract.COSMOS_DATA_ACTIONS) | set(contract.COSMOS_BUILTIN_DATA_READER_ACTIONS)
    out: list[tuple[str, str]] = []
    readers, writers = set(), set()
    for a in stack.of_type(T_COSMOS_ROLE_ASSIGNMENT):
        actions, scope = _assigned_actions(stack, a), _scope_of(a)
        if actions is None or scope is None:
            continue
        db, coll = scope
        where = "the account" if db is None else (f"database {db!r}" if coll is None else f"container {db}/{coll}")
        principal = a.props.get("principalId")
        if set(actions) <= reader:
            readers.add(principal)
            if (coll is not None and (db, coll) in targets) or (coll is None and (db is None or db in target_dbs)):
                out.append(
                    (
                        a.key,
                        f"{_s(a)} gives the export reader {where}, which holds restore target "
                        f"container(s) {sorted(f'{d}/{c}' for d, c in targets)}; assign it on the "
                        "exported source containers only",
                    )
                )
            continue
        writers.add(principal)
        if coll is None:
            out.append(
                (
                    a.key,
                    f"{_s(a)} gives a writer role (data actions {sorted(set(actions) - reader)!r}) on "
                    f"{where}; assign it only on each restore target container",
                )
            )
        elif (db, coll) in sources:
            out.append(
                (
                    a.key,
                    f"{_s(a)} gives a writer role on the exported source {where}; a restore identity "
                    "may write only its target containers",
                )
            )
        elif (db, coll) not in targets:
            out.append(
                (
                    a.key,
                    f"{_s(a)} gives a writer role on {where}, which is not a restore target "
                    f"({sorted(f'{d}/{c}' for d, c in targets) or 'none declared'}); assign it only "
                    "on the targets a restore task definition names in "
                    f"{contract.Env.RESTORE_TARGETS}",
                )
            )
    for a in stack.of_type(T_COSMOS_ROLE_ASSIGNMENT):
        principal = a.props.get("principalId")
        if known(principal) and principal in readers and principal in writers:
            out.append(
                (
                    a.key,
                    f"{_s(a)}: principal {principal!r} holds both the export reader and a writer role; "
                    "the export identity stays read-only, the restore identity is a separate principal",
                )
            )
    return out


# --- Least privilege of the program's own roles and keys ----------------------------

#: Every program role lives under /cosmos-s3-export/<stack>/ with the bootstrap's boundary
#: (components/naming.py; the deployer may create roles only so).
ROLE_PATH_ROOT = "/cosmos-s3-export/"
T_APPLICATION = "azuread:index/application:Application"
#: IAM actions that change what a role may do: a statement granting one must require the boundary.
BOUNDARY_CONDITIONED_ACTIONS = frozenset(
    {
        "iam:createrole",
        "iam:putrolepolicy",
        "iam:deleterolepolicy",
        "iam:attachrolepolicy",
        "iam:detachrolepolicy",
        "iam:putrolepermissionsboundary",
    }
)
_KMS_USE = ("kms:decrypt", "kms:encrypt", "kms:generatedatakey", "kms:reencrypt", "kms:creategrant")


def stack_of_urn(urn: str) -> str | None:
    """urn:pulumi:<stack>::<project>::<type>::<name> -> <stack>."""
    parts = urn.split(":")
    return parts[2] if len(parts) > 2 and urn.startswith("urn:pulumi:") else None


def check_application_secret(props: Mapping[str, Any]) -> list[str]:
    """An Entra application declared (or refreshed) holding a password: a static secret, whoever added it."""
    password = props.get("password")
    if known(password) and password:
        return [
            "Entra application holds a password (client secret); the worker federates its identity and needs "
            "none: remove it (and every secret or certificate added in the portal: `az ad app credential list`)"
        ]
    return []


def check_program_role(props: Mapping[str, Any], stack: str) -> list[str]:
    """A program role: under its stack's path, capped by the bootstrap's boundary, trusting a service only
    for this account (and, for the scheduler, its schedule group)."""
    errors = []
    path, boundary = props.get("path"), props.get("permissionsBoundary")
    if known(path) and path != f"{ROLE_PATH_ROOT}{stack}/":
        errors.append(
            f"role path {path!r} is not {ROLE_PATH_ROOT}{stack}/: the deployer may manage only its "
            "stack's path, and another stack's deployer could change a role outside it"
        )
    if boundary is not UNKNOWN and (
        not boundary or not str(boundary).endswith(f":policy/cosmos-s3-export-{stack}-boundary")
    ):
        errors.append(
            f"role has permissionsBoundary {boundary!r}; every program role carries the bootstrap's "
            f"boundary arn:aws:iam::<account>:policy/cosmos-s3-export-{stack}-boundary"
        )
    trust = parse_policy(props.get("assumeRolePolicy"))
    for st in _as_list((trust or {}).get("Statement")):
        services = _as_list((st.get("Principal") or {}).get("Service")) if isinstance(st.get("Principal"), dict) else []
        if st.get("Effect") != "Allow" or not services:
            continue
        keys = {k for c in (st.get("Condition") or {}).values() for k in c}
        if "aws:SourceAccount" not in keys:
            errors.append(f"trust of {services!r} has no aws:SourceAccount condition (confused deputy): add it")
        if "scheduler.amazonaws.com" in services and "aws:SourceArn" not in keys:
            errors.append(
                "trust of scheduler.amazonaws.com has no aws:SourceArn condition: bind it to the schedule group"
            )
    return errors


def check_identity_policy(document: Mapping[str, Any], where: str) -> list[str]:
    """No wildcard or service-wide action, no NotAction, role-changing IAM only under the boundary."""
    errors = []
    for i, st in enumerate(_as_list(document.get("Statement"))):
        if st.get("Effect") != "Allow":
            continue
        label = f"{where} statement {st.get('Sid') or i}"
        if "NotAction" in st:
            errors.append(f"{label} uses NotAction; list the allowed actions instead")
        actions = [str(a) for a in _as_list(st.get("Action"))]
        wild = [a for a in actions if a == "*" or a.endswith(":*")]
        if wild:
            errors.append(f"{label} allows whole services {wild!r}; name the exact actions")
        changing = sorted(a for a in actions if a.lower() in BOUNDARY_CONDITIONED_ACTIONS)
        conditions = st.get("Condition") or {}
        bounded = any("iam:PermissionsBoundary" in (conditions.get(op) or {}) for op in ("ArnEquals", "StringEquals"))
        if changing and not bounded:
            errors.append(
                f"{label} allows {changing!r} without the iam:PermissionsBoundary condition: a role it "
                "creates or edits could exceed the boundary"
            )
    return errors


def check_kms_key_policy(document: Mapping[str, Any], where: str) -> list[str]:
    """No kms:*; a key's use (decrypt, encrypt, grants) goes to named roles or a service bound to its source."""
    errors = []
    for i, st in enumerate(_as_list(document.get("Statement"))):
        if st.get("Effect") != "Allow":
            continue
        label = f"{where} statement {st.get('Sid') or i}"
        actions = [str(a).lower() for a in _as_list(st.get("Action"))]
        if "kms:*" in actions or "*" in actions:
            errors.append(
                f"{label} allows kms:*: split key administration from key use, and grant use to the "
                "roles that need it only (the default key policy hands every IAM principal the key)"
            )
            continue
        use = sorted(a for a in actions if a.startswith(_KMS_USE) or a in ("kms:generatedatakey*", "kms:reencrypt*"))
        if not use:
            continue
        principal = st.get("Principal") or {}
        keys = {k for c in (st.get("Condition") or {}).values() for k in c}
        if isinstance(principal, dict) and principal.get("Service"):
            if "aws:SourceArn" not in keys:
                errors.append(f"{label} lets {principal['Service']!r} use the key without an aws:SourceArn condition")
        elif "aws:PrincipalArn" not in keys:
            errors.append(
                f"{label} allows {use!r} to {principal!r} without an aws:PrincipalArn condition: name the "
                "roles that may use the key"
            )
    return errors


def check_program_roles(stack: Stack) -> list[tuple[str, str]]:
    """Every role of the stack, every identity policy document and every KMS key policy."""
    out: list[tuple[str, str]] = []
    for role in stack.of_type(T_ROLE):
        name = stack_of_urn(role.key)
        if name:
            out.extend((role.key, f"{_s(role)}: {m}") for m in check_program_role(role.props, name))
        for inline in (role.props.get("inlinePolicies") if known(role.props.get("inlinePolicies")) else None) or []:
            parsed = parse_policy(inline.get("policy"))
            if parsed is not None:
                out.extend((role.key, m) for m in check_identity_policy(parsed, f"{_s(role)} inline policy"))
    for p in stack.of_type(T_ROLE_POLICY, T_POLICY):
        parsed = parse_policy(p.props.get("policy"))
        if parsed is not None:
            out.extend((p.key, m) for m in check_identity_policy(parsed, _s(p)))
    for key in stack.of_type(T_KMS_KEY):
        parsed = parse_policy(key.props.get("policy"))
        if parsed is None:
            if key.props.get("policy") is None:
                out.append(
                    (
                        key.key,
                        f"{_s(key)} has no key policy: the default one hands every IAM principal of "
                        "the account the key; set an explicit policy",
                    )
                )
            continue
        out.extend((key.key, m) for m in check_kms_key_policy(parsed, _s(key)))
    return out


# --- Who can move data: passing the task roles, and the operator roles' trust -------------

_IAM_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_ACCOUNT_ROOT = re.compile(r"^(arn:aws[a-z-]*:iam::)?\d{12}(:root)?$")


def _grants_pass_role_on(document: Mapping[str, Any], role_arns: list[str]) -> list[str]:
    """The task role ARNs an identity policy lets its holder pass (Allow iam:PassRole, exact or by pattern)."""
    hits: list[str] = []
    for st in _as_list(document.get("Statement")):
        if st.get("Effect") != "Allow":
            continue
        actions = [str(a).lower() for a in _as_list(st.get("Action"))]
        if not any(a in ("iam:passrole", "iam:*", "*") or fnmatch.fnmatchcase("iam:passrole", a) for a in actions):
            continue
        resources = [str(r) for r in _as_list(st.get("Resource"))]
        hits += [arn for arn in role_arns if any(fnmatch.fnmatchcase(arn, r) for r in resources)]
    return sorted(set(hits))


def check_pass_role_grants(stack: Stack) -> list[tuple[str, str]]:
    """Only roles this stack declares may be granted iam:PassRole on the export or restore task role.

    Whoever may pass a task role may start a task as it (ecs:RunTask with overrides): an inline policy on
    a role of the stack is the only place such a grant may live. A managed policy (attachable to anyone)
    or an inline policy on a role outside the stack is refused.
    """
    out: list[tuple[str, str]] = []
    task_roles = stack.task_roles()
    arns = [r.props["arn"] for r in task_roles if known(r.props.get("arn"))]
    if not arns:
        return out
    own_roles = stack.of_type(T_ROLE)
    for p in stack.of_type(T_ROLE_POLICY, T_POLICY):
        parsed = parse_policy(p.props.get("policy"))
        if parsed is None:
            continue
        passed = _grants_pass_role_on(parsed, arns)
        if not passed:
            continue
        if p.type == T_POLICY:
            out.append(
                (
                    p.key,
                    f"{_s(p)} is a managed policy granting iam:PassRole on the task role(s) {passed!r}: it can be "
                    "attached to anyone; grant it inline on the stack's scheduler or operator role instead",
                )
            )
        elif not any(stack.refers_to(p, "role", role, "id", "name") for role in own_roles):
            out.append(
                (
                    p.key,
                    f"{_s(p)} grants iam:PassRole on the task role(s) {passed!r} to role "
                    f"{p.props.get('role')!r}, which this stack does not declare: only the stack's own "
                    "scheduler and operator roles may pass them",
                )
            )
    return out


def check_operator_trust(props: Mapping[str, Any]) -> list[str]:
    """A role trusted by AWS principals (an operator role) names exact IAM role ARNs only.

    No "*", no wildcard, no user, no federated principal; an account root only with an exact
    `aws:PrincipalArn` (ArnEquals) condition, the form used for IAM Identity Center permission-set roles.
    """
    errors = []
    trust = parse_policy(props.get("assumeRolePolicy"))
    for i, st in enumerate(_as_list((trust or {}).get("Statement"))):
        if st.get("Effect") != "Allow":
            continue
        label = f"trust statement {st.get('Sid') or i}"
        if "NotPrincipal" in st:
            errors.append(f"{label} uses NotPrincipal; name the principals")
            continue
        principal = st.get("Principal")
        if principal == "*" or (isinstance(principal, dict) and "*" in _as_list(principal.get("AWS"))):
            errors.append(f'{label} trusts "*": name the operator roles exactly')
            continue
        if not isinstance(principal, dict) or "AWS" not in principal:
            continue  # a service principal: check_program_role's rules
        if principal.get("Federated"):
            errors.append(f"{label} trusts a federated principal; operators are IAM roles")
        for arn in (str(a) for a in _as_list(principal.get("AWS"))):
            if _ACCOUNT_ROOT.match(arn):
                pinned = [
                    str(a)
                    for op in ("ArnEquals", "StringEquals")
                    for a in _as_list(((st.get("Condition") or {}).get(op) or {}).get("aws:PrincipalArn"))
                ]
                if not pinned or any("*" in a or "?" in a or not _IAM_ROLE_ARN.match(a) for a in pinned):
                    errors.append(
                        f"{label} trusts the account root {arn!r} without an exact aws:PrincipalArn (ArnEquals) "
                        "condition naming the operator roles: every principal of that account could assume it"
                    )
            elif "*" in arn or "?" in arn or not _IAM_ROLE_ARN.match(arn):
                errors.append(f"{label} trusts {arn!r}: not one exact IAM role ARN (no wildcard, no user)")
    return errors


def check_operator_trusts(stack: Stack) -> list[tuple[str, str]]:
    return [(r.key, f"{_s(r)}: {m}") for r in stack.of_type(T_ROLE) for m in check_operator_trust(r.props)]


# --- Analytics: the analyst role reads, never writes or deletes export data -------------

#: Where Athena writes query results as the caller (components/analytics_config.py RESULTS_PREFIX).
ATHENA_RESULTS = "/athena-results/"
#: Object writes Athena needs for its results; anything else that changes S3 is refused outright.
_RESULTS_WRITES = {"s3:putobject", "s3:abortmultipartupload", "s3:listmultipartuploadparts"}
_S3_READ_ONLY = re.compile(r"^s3:(get|list)", re.IGNORECASE)


def check_analyst_policy(document: Mapping[str, Any], where: str) -> list[str]:
    """An analyst role's policy: S3 reads only, plus Athena's result writes under athena-results/; no delete."""
    errors = []
    for i, st in enumerate(_as_list(document.get("Statement"))):
        if st.get("Effect") != "Allow":
            continue
        label = f"{where} statement {st.get('Sid') or i}"
        actions = [str(a) for a in _as_list(st.get("Action"))]
        resources = [str(r) for r in _as_list(st.get("Resource"))]
        for action in actions:
            low = action.lower()
            if not low.startswith("s3:") and low not in ("*",):
                continue
            if _S3_READ_ONLY.match(low) and "*" not in low:
                continue
            if low in _RESULTS_WRITES and resources and all(ATHENA_RESULTS in r for r in resources):
                continue
            errors.append(
                f"{label} allows {action!r} on {resources!r}: an analyst role may only read export data "
                f"(and write Athena's results under {ATHENA_RESULTS}); remove the write or delete"
            )
    return errors


def check_analyst_roles(stack: Stack) -> list[tuple[str, str]]:
    analysts = [r for r in stack.of_type(T_ROLE) if str(r.props.get("name", "")).endswith("-analyst")]
    out: list[tuple[str, str]] = []
    for role in analysts:
        for p in stack.of_type(T_ROLE_POLICY):
            if stack.refers_to(p, "role", role, "id", "name"):
                parsed = parse_policy(p.props.get("policy"))
                if parsed is not None:
                    out.extend((p.key, m) for m in check_analyst_policy(parsed, _s(p)))
    return out


# --- Alerting ---------------------------------------------------------------------


def check_topic_policy(document: Mapping[str, Any]) -> list[str]:
    """Only CloudWatch and EventBridge, each limited to this account by aws:SourceAccount, may use the topic."""
    out = []
    for st in _as_list(document.get("Statement")):
        if st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal")
        services = _as_list(principal.get("Service")) if isinstance(principal, dict) else []
        others = set(principal) - {"Service"} if isinstance(principal, dict) else {"*"}
        if others or not services or not set(services) <= ALERT_PUBLISHERS:
            out.append(
                f"statement {st.get('Sid', '?')!r} allows {principal!r}; only "
                f"{sorted(ALERT_PUBLISHERS)} may publish alerts"
            )
        elif "aws:SourceAccount" not in (st.get("Condition") or {}).get("StringEquals", {}):
            out.append(
                f"statement {st.get('Sid', '?')!r} lets {services} of any account publish; add "
                "Condition StringEquals aws:SourceAccount = this account"
            )
    return out


def _alarm_watches_freshness(alarm: Resource) -> bool:
    p = alarm.props
    return (
        p.get("namespace") == contract.METRICS_NAMESPACE
        and p.get("metricName") == contract.Metric.SUCCESS
        and p.get("treatMissingData") == "breaching"
        and bool(_as_list(p.get("alarmActions")))
    )


def check_alerting(stack: Stack) -> list[tuple[str, str]]:
    """Alert topics are KMS-encrypted and published to only by CloudWatch/EventBridge of this account; a stack
    that runs the worker alarms when a container goes without a successful commit, and on failed tasks."""
    out = []
    policies = stack.of_type(T_SNS_TOPIC_POLICY)
    for topic in stack.of_type(T_SNS_TOPIC):
        key = topic.props.get("kmsMasterKeyId")
        if key is not UNKNOWN and not key and not topic.deps.get("kmsMasterKeyId"):
            out.append(
                (
                    topic.key,
                    f"{_s(topic)} is not encrypted; set kmsMasterKeyId to a customer managed key "
                    "whose policy lets cloudwatch.amazonaws.com and events.amazonaws.com use it",
                )
            )
        mine = [p for p in policies if stack.refers_to(p, "arn", topic, "arn")]
        if not mine:
            out.append(
                (
                    topic.key,
                    f"{_s(topic)} has no topic policy; add one allowing only CloudWatch and "
                    "EventBridge of this account to publish",
                )
            )
        for p in mine:
            document = parse_policy(p.props.get("policy"))
            if document is not None:
                out.extend((p.key, f"{_s(p)}: {m}") for m in check_topic_policy(document))
    for td in stack.of_type(T_TASK_DEFINITION):
        if not any(_alarm_watches_freshness(a) for a in stack.of_type(T_METRIC_ALARM)):
            out.append(
                (
                    td.key,
                    f"{_s(td)} runs the export but no alarm watches {contract.METRICS_NAMESPACE} "
                    f"{contract.Metric.SUCCESS} with missing data breaching: a stopped backup would go "
                    "unnoticed; declare the Alerting component",
                )
            )
        rules_ = [r for r in stack.of_type(T_EVENT_RULE) if known(r.props.get("eventPattern"))]
        if not any(
            "aws.ecs" in _as_list(json.loads(r.props["eventPattern"]).get("source")) for r in rules_
        ) and not any(r.props.get("eventPattern") is UNKNOWN for r in stack.of_type(T_EVENT_RULE)):
            out.append(
                (
                    td.key,
                    f"{_s(td)} has no EventBridge rule on ECS task state changes: a failed task would "
                    "go unnoticed; declare the Alerting component",
                )
            )
    return out
