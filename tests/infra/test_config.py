"""Config validation: bad values fail before any resource, with key, value and fix in the message."""

from __future__ import annotations

import json

import pytest

from components.config import (
    ConfigError,
    bucket_name_problem,
    cosmos_name_problem,
    load_stack_config,
    schedule_problem,
)
from sandbox.mocked_stack import run_stack, stack_config


def load(stack: str = "prod", **overrides):
    cfg = stack_config(stack, overrides)
    return load_stack_config(cfg.get, stack, cfg.keys())


def problems(stack: str = "prod", **overrides) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(stack, **overrides)
    return e.value.problems


def test_every_stack_file_is_valid():
    for stack in ("dev", "staging", "prod"):
        assert load(stack).stack == stack


def test_missing_key_names_it_and_how_to_set_it():
    assert problems(bucketName=None) == [
        "cosmos-s3-export:bucketName is missing: set it with "
        "`pulumi config set cosmos-s3-export:bucketName <value>` (see 'Config keys' in README.md)"
    ]
    assert problems(**{"aws:region": None}) == [
        "aws:region is missing: set it with `pulumi config set aws:region <value>` (see 'Config keys' in README.md)"
    ]


def test_unknown_key_is_refused():
    assert problems(bucketname="x") == [
        "cosmos-s3-export:bucketname is not a known setting: remove it or fix its spelling (see 'Config keys' in README.md)"
    ]
    with pytest.raises(ConfigError, match="cosmos-s3-export:bucketname is not a known setting"):
        run_stack("dev", {"bucketname": "x"})


def test_all_problems_reported_at_once():
    found = problems(
        schedule="cron(0 2 * * *)",
        scheduleTimeZone="Mars/Olympus",
        bucketName="Bad_Bucket",
        tokenDurationSeconds=7200,
        minConsistency="Weak",
    )
    assert found == [
        'cosmos-s3-export:bucketName = "Bad_Bucket": S3 would refuse this bucket name: it may contain only '
        "lowercase letters, digits, '.' and '-', and must start and end with a letter or digit",
        'cosmos-s3-export:schedule = "cron(0 2 * * *)": EventBridge Scheduler would refuse it: a cron expression '
        "has 6 fields (minutes hours day-of-month month day-of-week year), this one has 5; "
        "e.g. 'cron(15 2 * * ? *)' or 'rate(6 hours)'",
        'cosmos-s3-export:scheduleTimeZone = "Mars/Olympus": unknown IANA time zone; '
        "use a name like 'UTC' or 'Europe/Berlin'",
        'cosmos-s3-export:minConsistency = "Weak": not a Cosmos DB consistency level; '
        "use one of Eventual, ConsistentPrefix, Session, BoundedStaleness, Strong",
        'cosmos-s3-export:tokenDurationSeconds = "7200": sts:GetWebIdentityToken accepts 60..3600 seconds; use e.g. 300',
    ]


def test_retention_shorter_than_object_lock():
    assert problems(retentionDays=100) == [
        "cosmos-s3-export:retentionDays = 100: shorter than objectLock.days (365): expiry would fight the lock; "
        "set retentionDays >= 365 or lower objectLock.days"
    ]


def test_unknown_exported_container():
    assert problems(exportContainers=["orders", "ordrs"], restore=None) == [
        "cosmos-s3-export:exportContainers = [\"ordrs\"]: 'ordrs' not in cosmosContainers "
        "['orders', 'customers', 'events', 'invoices']; add them to cosmosContainers or fix the spelling"
    ]


def test_bad_container_name():
    (msg,) = problems(cosmosContainers=["orders", "a/b", "customers", "invoices"])
    assert msg.startswith('cosmos-s3-export:cosmosContainers = ["orders", "a/b", "customers", "invoices"]: ')
    assert "invalid Cosmos DB container id(s): 'a/b' (must not contain '/')" in msg


def test_more_than_twenty_federated_credentials():
    extra = [{"name": f"r{i}", "subject": f"arn:aws:iam::444455556666:role/r{i}"} for i in range(20)]
    assert problems(additionalFederatedCredentials=extra) == [
        'cosmos-s3-export:additionalFederatedCredentials = "20 entries": the app would hold 21 federated credentials, '
        "Entra allows 20; remove some or use a second app"
    ]


def test_wildcard_subject_refused():
    (msg,) = problems(additionalFederatedCredentials=[{"name": "x", "subject": "arn:aws:iam::444455556666:role/*"}])
    assert msg.startswith(
        'cosmos-s3-export:additionalFederatedCredentials[0].subject = "arn:aws:iam::444455556666:role/*": '
    )
    assert "flexible (wildcard) credentials do not accept AWS tokens" in msg


@pytest.mark.parametrize("value", [59, 3601])
def test_token_duration_bounds(value):
    (msg,) = problems(tokenDurationSeconds=value)
    assert (
        msg
        == f'cosmos-s3-export:tokenDurationSeconds = "{value}": sts:GetWebIdentityToken accepts 60..3600 seconds; use e.g. 300'
    )


def test_fargate_cpu_memory_pair():
    assert problems(cpu=1024, memory=512) == [
        "cosmos-s3-export:memory = 512: Fargate with cpu 1024 accepts 2048..8192 MiB in steps of 1024"
    ]


def test_bad_structure_value():
    (msg,) = problems(subnetIds="[subnet-1")
    assert msg.startswith("cosmos-s3-export:subnetIds = '[subnet-1': not valid YAML/JSON structure")


def test_bad_subnet_and_log_retention():
    found = problems(subnetIds=["subnet-0c1d2e3f4a5b6c7d8", "sn-1"], logRetentionDays=10)
    assert found[0].startswith('cosmos-s3-export:logRetentionDays = "10": CloudWatch Logs accepts only 1, 3, 5')
    assert found[1] == (
        'cosmos-s3-export:subnetIds = ["subnet-0c1d2e3f4a5b6c7d8", "sn-1"]: not subnet ids: \'sn-1\'; '
        "use ids like 'subnet-0a1b2c3d4e5f60718'"
    )


def test_program_raises_before_declaring_anything():
    # The mocked run would register resources if the program got that far.
    with pytest.raises(ConfigError, match="cosmos-s3-export:schedule"):
        run_stack("dev", {"schedule": "every day"})


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("ab", "must be 3-63 characters long (it has 2)"),
        ("a" * 64, "must be 3-63 characters long (it has 64)"),
        ("My-Bucket", "may contain only lowercase letters"),
        ("a..b", "must not contain '..', '.-' or '-.'"),
        ("192.168.1.1", "must not be formatted as an IP address"),
        ("xn--abc", "must not start with the reserved prefix 'xn--'"),
        ("abc-s3alias", "must not end with the reserved suffix '-s3alias'"),
        ("-abc", "may contain only lowercase letters"),
    ],
)
def test_bucket_names_s3_refuses(name, problem):
    assert bucket_name_problem(name).startswith(problem)


def test_bucket_names_s3_accepts():
    for name in ("acme-cosmos-export-prod-euc1", "abc", "a.b-c1"):
        assert bucket_name_problem(name) is None


@pytest.mark.parametrize(
    ("expr", "ok"),
    [
        ("cron(15 2 * * ? *)", True),
        ("cron(0/30 * ? * MON-FRI *)", True),
        ("rate(1 hour)", True),
        ("rate(6 hours)", True),
        ("at(2030-01-01T00:00:00)", True),
        ("cron(0 2 * * *)", False),
        ("cron(0 2 * * MON *)", False),
        ("rate(1 hours)", False),
        ("rate(5 minute)", False),
        ("rate(0 minutes)", False),
        ("daily", False),
    ],
)
def test_schedule_expressions(expr, ok):
    assert (schedule_problem(expr) is None) == ok


def test_cosmos_names():
    assert cosmos_name_problem("orders") is None
    assert cosmos_name_problem("a#b?") == "must not contain '#', '?'"
    assert cosmos_name_problem("trailing ") == "must not end with a space"


def test_audit_retention_shorter_than_object_lock():
    assert problems(auditRetentionDays=30) == [
        "cosmos-s3-export:auditRetentionDays = 30: shorter than objectLock.days (365), which also locks the audit "
        "trail: set auditRetentionDays >= 365"
    ]
    assert load("dev", auditRetentionDays=30).bucket.audit_retention_days == 30  # dev has no lock


def test_bucket_name_leaves_room_for_the_audit_bucket():
    name = "a" * 58
    [problem] = problems(bucketName=name)
    assert problem == (
        f'cosmos-s3-export:bucketName = "{name}": leaves no room for the audit trail\'s bucket '
        f"'{name}-audit' (63 characters at most): shorten it to 57 or fewer"
    )
    assert load(bucketName="a" * 57).bucket.bucket_name == "a" * 57


def test_entra_app_owners_are_object_ids():
    good = ["0b7d7f58-2a64-4f8e-9a0c-6c1f7d3e5b21", "1c8e8a69-3b75-4a9f-8b1d-7d2a8e4f6c32"]
    assert load(entraAppOwners=good).identity.entra_app_owners == good
    [problem] = problems(entraAppOwners=["alice@acme.com", good[0]])
    assert (
        problem.startswith('cosmos-s3-export:entraAppOwners = ["alice@acme.com", ')
        and "not Entra object ids: 'alice@acme.com'; list the object ids (GUIDs) of the CI deployer's service principal"
        in problem
    )
    [problem] = problems(entraAppOwners=[good[0], good[0].upper()])
    assert problem.endswith("lists an owner more than once; list each once")


# --- fanOut (components/fan_out_config.py): each message names the key, the bad value and the fix ---

SHARDS_FIX = (
    "use 2..1000 (1 shard is the single task: unset fanOut instead; more than 1000 Fargate tasks per run is "
    "beyond what one run should launch)"
)


@pytest.mark.parametrize(
    "fan_out,message",
    [
        ({"maxShards": 1}, f"cosmos-s3-export:fanOut.maxShards = 1: {SHARDS_FIX}"),
        ({"maxShards": 1001}, f"cosmos-s3-export:fanOut.maxShards = 1001: {SHARDS_FIX}"),
        (
            {"maxShards": 8, "maxConcurrency": 0},
            "cosmos-s3-export:fanOut.maxConcurrency = 0: use 1..1000, at most fanOut.maxShards, or unset it "
            "(every shard at once)",
        ),
        (
            {"maxShards": 8, "maxConcurrency": 9},
            "cosmos-s3-export:fanOut.maxConcurrency = 9: more than fanOut.maxShards (8): at most that many shards "
            "exist; lower it to 8 or less, or unset it",
        ),
        ({"maxShards": 8, "timeoutHours": 0}, "cosmos-s3-export:fanOut.timeoutHours = 0: use 1..720 hours"),
        ({"maxShards": 8, "timeoutHours": 721}, "cosmos-s3-export:fanOut.timeoutHours = 721: use 1..720 hours"),
        (
            {"maxShards": 8, "maxshards": 8},
            "cosmos-s3-export:fanOut.maxshards is not a known setting: remove it or fix its spelling "
            "(see 'Config keys' in README.md)",
        ),
        (
            {"maxConcurrency": 4},
            "cosmos-s3-export:fanOut.maxShards is missing: set it with `pulumi config set cosmos-s3-export:fanOut "
            "<value>` (see 'Config keys' in README.md)",
        ),
    ],
)
def test_bad_fan_out_is_refused_with_key_value_and_fix(fan_out, message):
    assert problems(fanOut=fan_out) == [message]
    with pytest.raises(ConfigError):  # before any resource: the program stops at the config
        run_stack("dev", {"fanOut": fan_out})


def test_fan_out_bounds_are_inclusive_and_off_by_default():
    assert load().schedule.fan_out is None
    for fan_out in ({"maxShards": 2}, {"maxShards": 1000, "maxConcurrency": 1000, "timeoutHours": 720}):
        assert load(fanOut=fan_out).schedule.fan_out is not None
    c = load(fanOut={"maxShards": 8, "maxConcurrency": 1, "timeoutHours": 1}).schedule.fan_out
    assert (c.max_shards, c.concurrency, c.timeout_hours, c.distributed) == (8, 1, 1, False)
    assert load(fanOut={"maxShards": 41}).schedule.fan_out.distributed  # above 40: the Distributed Map
    assert load(fanOut={"maxShards": 40}).schedule.fan_out.concurrency == 40  # unset: every shard at once


@pytest.mark.parametrize("prefix,bad", [("it's", "'"), ("exports/it's", "'")])
def test_fan_out_refuses_a_prefix_its_plan_key_would_have_to_escape(prefix, bad):
    assert problems(fanOut={"maxShards": 8}, exportPrefix=prefix) == [
        f"cosmos-s3-export:exportPrefix = {json.dumps(prefix)}: contains {bad!r}, which the fan-out state machine "
        "would have to escape in its plan key's intrinsic string (an escape no local interpreter checks); rename "
        "the prefix or unset fanOut"
    ]
    assert load(exportPrefix=prefix).bucket.export_prefix == prefix  # fine without fanOut
