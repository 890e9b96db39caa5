"""One rule, one home: what the stack config accepts, the worker accepts, for the same reason.

The stack config (components/config.py) and the worker settings
(cosmos_export/settings.py) once had their own copies of the name rules, and
they drifted: a container named `orders.v2` deployed fine and every scheduled
run then exited 2. Both now take their rules, choices and bounds from
`cosmos_export.contract`; these tests hold them to it, explicitly and by
property (hypothesis).
"""

from __future__ import annotations

import os
import typing
from typing import Any
from unittest import mock

import annotated_types
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from components import program
from components.config import TASK_FIELDS, ConfigError, StackConfig, WorkerConfig, load_stack_config
from cosmos_export import cli, commit, contract, layout
from cosmos_export.contract import Env
from cosmos_export.settings import SettingsError, WorkerSettings, env_name, environment, load_settings
from sandbox.mocked_stack import stack_config

TENANT, CLIENT = "11111111-2222-3333-4444-555555555555", "22222222-2222-3333-4444-555555555555"
KMS = "arn:aws:kms:eu-central-1:123456789012:key/0a1b2c3d-0000-4000-8000-000000000000"


def load_stack(**overrides) -> StackConfig:
    # Without prod's restore block: it maps prod's own containers, which these tests replace (and without
    # its operators, some of which hold `restore`).
    cfg = stack_config("prod", {"restore": None, "operators": None, **overrides})
    return load_stack_config(cfg.get, "prod", cfg.keys())


def stack_problems(**overrides) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_stack(**overrides)
    return e.value.problems


def env_of(c: StackConfig) -> dict[str, str]:
    """The task definition's environment, with the values Pulumi resolves later filled in."""
    endpoint = f"https://{c.cosmos.cosmos_account_name}.documents.azure.com:443/"
    return program.worker_environment(c, tenant_id=TENANT, client_id=CLIENT, cosmos_endpoint=endpoint, kms_key_arn=KMS)


def load_worker(env: dict[str, str]) -> WorkerSettings:
    with mock.patch.dict(os.environ, env, clear=True):
        return load_settings()


def worker_problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as e:
        load_worker(env)
    return e.value.problems


# --- The drift the issue found ----------------------------------------------


@pytest.mark.parametrize("name", ["orders.v2", "order lines", "orders_2025-q1", "a" * 255])
def test_a_container_the_stack_accepts_is_exported_by_the_worker(name):
    c = load_stack(cosmosContainers=["orders", name], exportContainers=["orders", name])
    settings = load_worker(env_of(c))
    assert settings.cosmos_containers == ("orders", name)
    target = layout.ExportTarget(
        settings.bucket, settings.prefix, settings.account_name or "", settings.cosmos_database, name
    )
    assert target.container_prefix == f"cosmos/acme-orders-prod/orders/{name}"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a/b", "must not contain '/'"),
        ("a#b?", "must not contain '#', '?'"),
        ("trailing ", "must not end with a space"),
        (" leading", "must not start or end with whitespace"),
        ("bestellungen-ä", "must contain only printable ASCII characters"),
        ("a,b", "must not contain ','"),
        ("src=dst", "must not contain '='"),
        ("..", "must not be '..'"),
        ("x" * 256, "must be 1-255 characters long"),
    ],
)
def test_a_container_the_worker_refuses_is_refused_by_the_stack_for_the_same_reason(name, problem):
    assert contract.cosmos_id_problem(name).startswith(problem)
    (stack_line,) = stack_problems(cosmosContainers=["orders", name], exportContainers=None)
    assert stack_line.startswith("cosmos-s3-export:cosmosContainers = ") and problem in stack_line
    good = env_of(load_stack())
    if name.strip() == name and "," not in name:  # the worker strips and splits its list; the stack refuses both
        (worker_line,) = worker_problems({**good, Env.COSMOS_CONTAINERS: f"orders,{name}"})
        assert worker_line.startswith(f"{Env.COSMOS_CONTAINERS}=") and problem in worker_line
    with pytest.raises(ValueError, match="cannot be used in an S3 key") as e:
        layout.ExportTarget("bkt", "p", "acct", "db", name)
    assert problem in str(e.value)


@pytest.mark.parametrize(
    ("account", "ok"),
    [
        ("a" * 44, True),
        ("abc", True),
        ("acme-orders-prod", True),
        ("a" * 45, False),  # the worker once allowed 50
        ("ab", False),
        ("Acme", False),
        ("-acme", False),
        ("acme-", False),
        ("acme_orders", False),
    ],
)
def test_account_names_follow_azures_rule_on_both_sides(account, ok):
    """Azure: 3-44 lowercase letters, digits and '-', starting and ending with a letter or digit."""
    assert (contract.cosmos_account_problem(account) is None) == ok
    if ok:
        c = load_stack(cosmosAccountName=account)
        assert load_worker(env_of(c)).account_name == account  # derived from the endpoint the program sets
    else:
        (line,) = stack_problems(cosmosAccountName=account)
        assert line.startswith("cosmos-s3-export:cosmosAccountName")
        good = env_of(load_stack())
        assert worker_problems({**good, Env.COSMOS_ACCOUNT: account})[0].startswith(f"{Env.COSMOS_ACCOUNT}=")
        if account == account.lower():  # a host name is case-insensitive: 'Acme.documents...' is account 'acme'
            endpoint = {**good, Env.COSMOS_ENDPOINT: f"https://{account}.documents.azure.com/"}
            with mock.patch.dict(os.environ, endpoint, clear=True):
                with pytest.raises(SettingsError, match=f"{Env.COSMOS_ACCOUNT}=\\(unset\\): cannot be derived"):
                    load_settings()


# --- One definition of each choice, bound and default ----------------------


def _choices(annotation) -> set[str]:
    args = typing.get_args(annotation) if typing.get_origin(annotation) is not typing.Literal else (annotation,)
    return {v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)}


def _bounds(info) -> tuple[Any, Any]:
    lo = next((m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)), None)
    hi = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), None)
    return lo, hi


PASSED_THROUGH = sorted(set(WorkerConfig.model_fields) - TASK_FIELDS)


def test_every_worker_section_field_is_a_worker_setting_or_a_task_field():
    """A tuning key named unlike its worker field would silently never reach the worker."""
    assert set(PASSED_THROUGH) <= set(WorkerSettings.model_fields)
    assert not TASK_FIELDS & set(WorkerSettings.model_fields)
    assert TASK_FIELDS <= set(WorkerConfig.model_fields)


@pytest.mark.parametrize("field", PASSED_THROUGH)
def test_passed_through_fields_share_choices_bounds_and_defaults(field):
    stack, worker = WorkerConfig.model_fields[field], WorkerSettings.model_fields[field]
    assert _choices(stack.annotation) == _choices(worker.annotation) or (
        field == "min_consistency" and _choices(worker.annotation) == set(contract.CONSISTENCY_LEVELS)
    )
    assert _bounds(stack) == _bounds(worker)
    if worker.default is not None:  # None: the worker leaves it to the SDK; the stack always sets it
        assert stack.default == worker.default


def test_run_and_manifest_modes_have_one_definition():
    assert (
        {m.value for m in cli.Mode}
        == set(contract.RUN_MODES)
        == _choices(WorkerConfig.model_fields["export_mode"].annotation)
    )
    assert (
        {m.value for m in cli.IdentityMode}
        == set(contract.IDENTITY_MODES)
        == _choices(WorkerSettings.model_fields["identity_mode"].annotation)
    )
    assert set(contract.RUN_MODES) < set(typing.get_args(commit.Mode))


def test_environment_takes_only_worker_field_names():
    with pytest.raises(ValueError, match="not worker settings: bucket_name; add the field to WorkerSettings first"):
        environment(bucket_name="x")
    assert environment(cosmos_containers=["a", "b"], concurrency=8, cosmos_tls_verify=False, kms_key_arn=None) == {
        Env.COSMOS_CONTAINERS: "a,b",
        Env.CONCURRENCY: "8",
        Env.COSMOS_TLS_VERIFY: "false",
    }


# --- By property: every value, both directions -------------------------------

ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
name_text = st.one_of(
    st.text(ASCII, min_size=1, max_size=12),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=8),
    st.sampled_from(["orders.v2", "order lines", ".", "..", "a=b", "x" * 256, " x", "x ", "a\tb"]),
)
ints = st.one_of(st.integers(-5, 6000).map(str), st.sampled_from(["5m", "1e3", "3.5", " 8", "0x10"]))


def choice_text(values):
    return st.one_of(
        st.sampled_from(list(values)),
        st.text(ASCII, min_size=1, max_size=10),
        st.sampled_from([v.lower() for v in values] + [v.upper() for v in values]),
    )


#: Worker variable -> (stack key, values to draw): every variable the program sets from the stack config.
SHARED = {
    Env.AWS_REGION: (
        "aws:region",
        st.one_of(
            st.sampled_from(["eu-west-1", "us-gov-west-1", "Ireland", "eu-west", " eu-west-1"]),
            st.text(ASCII, min_size=1, max_size=14),
        ),
    ),
    Env.TOKEN_DURATION_SECONDS: ("tokenDurationSeconds", ints),
    Env.COSMOS_DATABASE: ("cosmosDatabase", name_text),
    Env.COSMOS_CONTAINERS: (
        "cosmosContainers",
        st.lists(name_text.filter(lambda n: n == n.strip() and "," not in n), min_size=1, max_size=3),
    ),
    Env.BUCKET: (
        "bucketName",
        st.one_of(
            st.text(st.sampled_from("ab9.-_A"), min_size=1, max_size=66),
            st.sampled_from(["xn--abc", "abc-s3alias", "192.168.1.1", "a..b"]),
        ),
    ),
    Env.PREFIX: ("exportPrefix", st.text(st.sampled_from("ab/._ *#"), min_size=1, max_size=8)),
    Env.MIN_CONSISTENCY: ("minConsistency", choice_text(contract.CONSISTENCY_LEVELS)),
    Env.CHANGE_FEED_MODE: ("changeFeedMode", choice_text(contract.CHANGE_FEED_MODES)),
    Env.PRIORITY: ("priority", choice_text(contract.PRIORITIES)),
    Env.CONCURRENCY: ("concurrency", ints),
    Env.PART_SIZE_MB: ("partSizeMb", ints),
    Env.COMPRESSION: ("compression", choice_text(contract.COMPRESSIONS)),
    Env.CURRENT_STATE: (
        "currentState",
        st.one_of(
            st.sampled_from(["true", "false", "True", "no", "1", "0", " true"]), st.text(ASCII, min_size=1, max_size=6)
        ),
    ),
}
#: Set from other resources' outputs, not from a config key.
FROM_RESOURCES = {Env.IDENTITY_MODE, Env.AZURE_TENANT_ID, Env.AZURE_CLIENT_ID, Env.COSMOS_ENDPOINT, Env.KMS_KEY_ARN}
#: The stack's name itself (the Stack dimension of the worker's metrics).
FROM_STACK_NAME = {Env.STACK}


def test_the_property_covers_every_variable_the_program_sets():
    assert set(env_of(load_stack())) == set(SHARED) | FROM_RESOURCES | FROM_STACK_NAME


def reasons(var: str, value) -> list[str]:
    """What both sides must cite when refusing `value`: the contract's own words for the rule."""
    names = value if isinstance(value, list) else [value]
    if var in (Env.COSMOS_DATABASE, Env.COSMOS_CONTAINERS):
        return [p for n in names if (p := contract.cosmos_id_problem(n))] or ["listed twice"]
    rule = {
        Env.BUCKET: contract.bucket_name_problem,
        Env.PREFIX: contract.prefix_problem,
        Env.AWS_REGION: contract.aws_region_problem,
    }.get(var)
    if rule:
        return [rule(value) or "(accepted)"]
    if var == Env.CURRENT_STATE:
        return ["valid boolean"]
    if var in (Env.MIN_CONSISTENCY, Env.CHANGE_FEED_MODE, Env.PRIORITY, Env.COMPRESSION):
        return list(
            {
                Env.MIN_CONSISTENCY: contract.CONSISTENCY_LEVELS,
                Env.CHANGE_FEED_MODE: contract.CHANGE_FEED_MODES,
                Env.PRIORITY: contract.PRIORITIES,
                Env.COMPRESSION: contract.COMPRESSIONS,
            }[var]
        )
    bound = {
        Env.CONCURRENCY: contract.CONCURRENCY,
        Env.PART_SIZE_MB: contract.PART_SIZE_MB,
        Env.TOKEN_DURATION_SECONDS: contract.TOKEN_DURATION_SECONDS,
    }[var]
    try:
        int(value.strip())
    except ValueError:
        return ["valid integer"]
    return [str(bound)]


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(var=st.sampled_from(sorted(SHARED)), data=st.data())
def test_stack_and_worker_agree_on_every_value(var, data):
    """Stack accepts => the worker accepts the environment the program derives, with the same values;
    the worker refuses => the stack refuses that value too, citing the same contract rule."""
    key, values = SHARED[var]
    value = data.draw(values, label=key)
    override = {key: value}
    if key == "cosmosContainers":
        override["exportContainers"] = None
    if key == "currentState":
        override["analystPrincipals"] = None  # analysts need the tables: that cross-field rule is tested apart
    good = env_of(load_stack())
    worker_value = ",".join(value) if isinstance(value, list) else value
    assume(worker_value.strip() != "" or var != Env.PRIORITY)  # an empty variable means unset to the worker
    try:
        c = load_stack(**override)
    except ConfigError as e:
        stack_refusal = [p for p in e.problems if p.startswith(key if ":" in key else f"cosmos-s3-export:{key}")]
        assert stack_refusal, e.problems
    else:
        settings = load_worker(env_of(c))  # raises SettingsError if the worker refuses what the stack deployed
        shown = {Env.COSMOS_CONTAINERS: settings.cosmos_containers, Env.AWS_REGION: settings.aws_region}
        assert shown.get(var, getattr(settings, _field_of(var))) == (
            tuple(value) if isinstance(value, list) else _typed(var, value)
        )
        return
    try:
        load_worker({**good, var: worker_value})
    except SettingsError as e:
        worker_refusal = [p for p in e.problems if p.startswith(f"{var}=")]
        assert worker_refusal, e.problems
        for reason in reasons(var, value):
            assert reason.lower() in worker_refusal[0].lower(), (reason, worker_refusal)
            assert reason.lower() in " ".join(stack_refusal).lower(), (reason, stack_refusal)
    # else: the worker would take a value the stack refuses (it strips spaces around list items,
    # for one): stricter at deploy time is the safe direction.


def _field_of(var: str) -> str:
    return next(f for f in WorkerSettings.model_fields if env_name(f) == var)


def _typed(var: str, value: str):
    annotation = WorkerSettings.model_fields[_field_of(var)].annotation
    if annotation is bool:
        return TypeAdapter(bool).validate_python(value)
    return int(value) if annotation is int else value


# --- The RU budget (maxRuPerSecond): one setting for the export and the restore task ------------------


def test_max_ru_per_second_reaches_the_worker():
    # The restore task's environment is the export's plus its own keys (program.restore_environment).
    c = load_stack(maxRuPerSecond=800)
    env = env_of(c)
    assert env[Env.MAX_RU_PER_SECOND] == "800.0"
    assert load_worker(env).max_ru_per_second == 800.0
    assert Env.MAX_RU_PER_SECOND not in env_of(load_stack())  # unset: no budget, no variable


@pytest.mark.parametrize("value", [0, -5, "inf", "lots"])
def test_a_budget_both_halves_refuse_is_refused_by_the_stack(value):
    problems = stack_problems(maxRuPerSecond=value)
    assert len(problems) == 1 and "maxRuPerSecond" in problems[0] and f"{value}" in problems[0]
    assert any(
        "maxRuPerSecond" in p for p in worker_problems({**env_of(load_stack()), Env.MAX_RU_PER_SECOND: str(value)})
    )
