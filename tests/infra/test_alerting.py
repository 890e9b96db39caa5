"""Alerting, under mocks for every stack: the alarms (metric, dimensions the worker really emits, threshold,
period, missing data), the task-failed rule's event pattern against sample events, the encrypted topic and
its policy, subscriptions from config, the dashboard; and the alerting config's rules without mocks."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from components import alerting_config
from components.alerting import task_failed_pattern
from components.alerting_config import AlertingConfig, schedule_interval_minutes
from components.config import ConfigError, load_stack_config
from cosmos_export import contract, metrics
from cosmos_export.settings import WorkerSettings
from sandbox.mocked_stack import run_stack, stack_config

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TOPIC = "aws:sns/topic:Topic"


# --- EventBridge pattern matching (the subset the rule uses, with AWS's semantics) ----------------------------
# moto's matcher does not descend into arrays of objects (detail.containers[].exitCode), which real EventBridge
# does, so the rule is checked with this implementation of the documented rules: every key of the pattern must
# match; a leaf is a list of alternatives; an event array matches when any of its elements does; arrays of
# objects are flattened (each path collects the values of every element); a missing field matches nothing
# (not even anything-but) except {"exists": false}.

_MISSING = object()


def _values(node: Any, path: list[str]) -> list[Any]:
    if not path:
        return [v for item in node for v in _values(item, [])] if isinstance(node, list) else [node]
    if isinstance(node, list):
        return [v for item in node for v in _values(item, path)]
    if isinstance(node, dict) and path[0] in node:
        return _values(node[path[0]], path[1:])
    return []


def _leaf_matches(rule: Any, values: list[Any]) -> bool:
    if not isinstance(rule, dict):
        return any(v == rule and type(v) is type(rule) for v in values)
    ((name, arg),) = rule.items()
    if name == "exists":
        return bool(values) == arg
    if name == "prefix":
        return any(isinstance(v, str) and v.startswith(arg) for v in values)
    if name == "anything-but":
        excluded = arg if isinstance(arg, list) else [arg]
        return any(v not in excluded for v in values)
    raise NotImplementedError(f"pattern operator {name!r} is not used by the rule; implement it before using it")


def event_matches(pattern: dict, event: dict, path: tuple[str, ...] = ()) -> bool:
    for key, sub in pattern.items():
        if isinstance(sub, dict):
            if not event_matches(sub, event, path + (key,)):
                return False
        elif not any(_leaf_matches(rule, _values(event, [*path, key])) for rule in sub):
            return False
    return True


def ecs_stop_event(
    *,
    family: str = "export-dev",
    exit_codes: tuple = (1,),
    status: str = "STOPPED",
    account: str = "111122223333",
    region: str = "eu-west-1",
) -> dict:
    """An ECS Task State Change event as EventBridge delivers it (fields trimmed to those that matter)."""
    containers = [
        {"name": "worker", "lastStatus": status, **({"exitCode": c} if c is not None else {})} for c in exit_codes
    ]
    return {
        "version": "0",
        "id": "3317b2af-7005-947d-b652-f55e762e571a",
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": account,
        "time": "2026-12-02T02:15:31Z",
        "region": region,
        "resources": [f"arn:aws:ecs:{region}:{account}:task/export-dev-cluster/0a1b2c3d4e5f"],
        "detail": {
            "clusterArn": f"arn:aws:ecs:{region}:{account}:cluster/export-dev-cluster",
            "containers": containers,
            "desiredStatus": "STOPPED",
            "lastStatus": status,
            "stopCode": "EssentialContainerExited",
            "stoppedReason": "Essential container in task exited",
            "taskDefinitionArn": f"arn:aws:ecs:{region}:{account}:task-definition/{family}:7",
        },
    }


def test_pattern_matches_exactly_this_familys_stops_with_a_non_zero_exit():
    pattern = task_failed_pattern(
        region="eu-west-1", account_id="111122223333", families=["export-dev", "export-dev-restore"]
    )
    assert event_matches(pattern, ecs_stop_event(exit_codes=(1,)))
    assert event_matches(pattern, ecs_stop_event(exit_codes=(143,)))  # SIGTERM before commit
    assert event_matches(pattern, ecs_stop_event(exit_codes=(0, 2)))  # any container non-zero
    assert not event_matches(pattern, ecs_stop_event(exit_codes=(0,)))  # a clean run
    assert not event_matches(pattern, ecs_stop_event(exit_codes=(None,)))  # never started: no exit code
    assert not event_matches(pattern, ecs_stop_event(status="RUNNING"))
    assert event_matches(pattern, ecs_stop_event(family="export-dev-restore"))  # a failed drill task
    assert not event_matches(pattern, ecs_stop_event(family="export-dev-other"))  # a family sharing the prefix
    assert not event_matches(pattern, ecs_stop_event(family="export-staging"))
    assert not event_matches(pattern, ecs_stop_event(account="444455556666"))
    assert not event_matches(pattern, ecs_stop_event(region="eu-central-1"))
    other_source = ecs_stop_event()
    other_source["source"] = "custom.ecs"
    assert not event_matches(pattern, other_source)
    wrong_type = copy.deepcopy(ecs_stop_event())
    wrong_type["detail"]["containers"][0]["exitCode"] = "1"  # a string is not the number the pattern excludes
    assert event_matches(pattern, wrong_type)


def test_the_matcher_itself_follows_eventbridges_rules():
    event = {"a": [{"b": 1}, {"b": 2}], "c": "xyz"}
    assert event_matches({"a": {"b": [2]}}, event) and not event_matches({"a": {"b": [3]}}, event)
    assert event_matches({"c": [{"prefix": "xy"}]}, event) and not event_matches({"c": [{"prefix": "yz"}]}, event)
    assert not event_matches({"d": [{"anything-but": 0}]}, event)  # missing: no match
    assert event_matches({"d": [{"exists": False}]}, event) and not event_matches({"c": [{"exists": False}]}, event)
    with pytest.raises(NotImplementedError):
        event_matches({"c": [{"numeric": [">", 0]}]}, event)


# --- The stack's resources -------------------------------------------------------------------------------------


def worker_emf(run, container: str) -> dict:
    """The EMF document the deployed worker would print for `container` (settings from the task definition)."""
    env = run.task_definition_environment()
    settings = WorkerSettings.model_validate({**env, contract.Env.COSMOS_CONTAINERS: container})
    from datetime import datetime, timezone

    return metrics.emf_record(
        stack=settings.stack,
        account=settings.account_name or "",
        database=settings.cosmos_database,
        container=container,
        mode="incremental",
        at=datetime.now(timezone.utc),
        values={contract.Metric.SUCCESS: 1},
    )


def alarms(run) -> dict[str, Any]:
    return {r.name: r for r in run.of_type(ALARM)}


def test_alarms_per_container_match_what_the_worker_emits(every_stack):
    run = every_stack
    stack = run.stack
    config = load_stack_config(stack_config(stack).get, stack, stack_config(stack))
    topic_arn = run.one(TOPIC).outputs["arn"]
    found = alarms(run)
    n = f"export-{stack}"
    expected = {f"{n}-schedule-dlq"} | {
        f"{n}-{kind}-{c}" for c in config.cosmos.exported for kind in ("stale", "drill-failed")
    }
    if config.worker.change_feed_mode == "AllVersionsAndDeletes":
        expected |= {f"{n}-backup-window-{c}" for c in config.cosmos.exported}
    assert set(found) == expected
    for container in config.cosmos.exported:
        emf = worker_emf(run, container)
        # The alarm's dimensions are exactly the worker's container dimension set, with the worker's values.
        dims = {name: emf[name] for name in emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]}
        stale = found[f"{n}-stale-{container}"].inputs
        assert (stale["namespace"], stale["metricName"], stale["dimensions"]) == ("CosmosExport", "Success", dims)
        assert (stale["statistic"], stale["period"], stale["evaluationPeriods"], stale["threshold"]) == (
            "Sum",
            config.freshness_minutes * 60,
            1,
            1,
        )
        assert (stale["comparisonOperator"], stale["treatMissingData"]) == ("LessThanThreshold", "breaching")
        drill = found[f"{n}-drill-failed-{container}"].inputs
        assert (
            drill["metricName"],
            drill["dimensions"],
            drill["statistic"],
            drill["threshold"],
            drill["comparisonOperator"],
            drill["treatMissingData"],
            drill["period"],
        ) == (contract.Metric.DRILL_FAILED, dims, "Maximum", 1, "GreaterThanOrEqualToThreshold", "notBreaching", 3600)
    dlq = found[f"{n}-schedule-dlq"].inputs
    queue = run.named("aws:sqs/queue:Queue", f"{n}-schedule-dlq")
    assert (dlq["namespace"], dlq["metricName"], dlq["dimensions"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": queue.outputs["name"]},
    )
    assert (dlq["statistic"], dlq["threshold"], dlq["comparisonOperator"], dlq["treatMissingData"], dlq["period"]) == (
        "Maximum",
        0,
        "GreaterThanThreshold",
        "notBreaching",
        300,
    )
    for alarm in found.values():
        assert alarm.inputs["alarmActions"] == [topic_arn] and alarm.inputs["okActions"] == [topic_arn]


def test_default_freshness_is_twice_the_schedule_interval():
    assert [run_stack(s).named(ALARM, f"export-{s}-stale-orders").inputs["period"] for s in ("dev", "prod")] == [
        2 * 6 * 3600,
        2 * 24 * 3600,
    ]  # rate(6 hours); cron(15 2 * * ? *) daily
    custom = run_stack("dev", {"freshnessMinutes": 400})
    assert custom.named(ALARM, "export-dev-stale-orders").inputs["period"] == 400 * 60


@pytest.mark.parametrize(("days", "period", "periods"), [(7, 86400, 3), (30, 86400, 7)])
def test_all_versions_and_deletes_alarms_before_the_backup_window(days, period, periods):
    run = run_stack("dev", {"changeFeedMode": "AllVersionsAndDeletes", "continuousBackupDays": days})
    for container in ("orders", "customers"):
        window = run.named(ALARM, f"export-dev-backup-window-{container}").inputs
        assert (window["metricName"], window["statistic"], window["period"], window["evaluationPeriods"]) == (
            "Success",
            "Sum",
            period,
            periods,
        )
        assert (window["threshold"], window["comparisonOperator"], window["treatMissingData"]) == (
            1,
            "LessThanThreshold",
            "breaching",
        )
        assert period * periods <= min(days * 86400 / 2, 7 * 86400)  # fires with half the window still left
    assert not [r for r in run_stack("dev").of_type(ALARM) if "backup-window" in r.name]  # LatestVersion: none


def test_task_failed_rule_targets_the_topic_with_the_familys_pattern(every_stack):
    run = every_stack
    rule = run.one("aws:cloudwatch/eventRule:EventRule")
    families = [d.inputs["family"] for d in run.of_type("aws:ecs/taskDefinition:TaskDefinition")]
    assert families[0] == f"export-{run.stack}" and len(families) >= 2  # export + restore (+ snapshot)
    account = run.task_role_arn.split(":")[4]
    region = run.task_definition_environment()[contract.Env.AWS_REGION]
    assert json.loads(rule.inputs["eventPattern"]) == task_failed_pattern(
        region=region, account_id=account, families=families
    )
    pattern = json.loads(rule.inputs["eventPattern"])
    for family in families:  # every task the stack runs: export, snapshot, restore/drill
        assert event_matches(pattern, ecs_stop_event(family=family, account=account, region=region))
        assert not event_matches(
            pattern, ecs_stop_event(family=family, account=account, region=region, exit_codes=(0,))
        )
    target = run.one("aws:cloudwatch/eventTarget:EventTarget").inputs
    assert target["rule"] == rule.outputs["name"] and target["arn"] == run.one(TOPIC).outputs["arn"]


def test_topic_is_kms_encrypted_and_only_cloudwatch_and_eventbridge_of_this_account_publish(every_stack):
    run = every_stack
    account = run.task_role_arn.split(":")[4]
    topic = run.one(TOPIC)
    key = run.named("aws:kms/key:Key", f"export-{run.stack}-alerts-key")
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    region = run.task_definition_environment()[contract.Env.AWS_REGION]
    key_statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    assert set(key_statements) == {"KeyAdministrationThroughIam", "CloudWatchAlarmsEncrypt", "EventBridgeRulesEncrypt"}
    assert not any(
        "kms:Decrypt" in s["Action"] or "kms:*" in s["Action"] for s in [key_statements["KeyAdministrationThroughIam"]]
    )
    for sid, service, source in (
        ("CloudWatchAlarmsEncrypt", "cloudwatch", f"arn:aws:cloudwatch:{region}:{account}:alarm:*"),
        ("EventBridgeRulesEncrypt", "events", f"arn:aws:events:{region}:{account}:rule/*"),
    ):
        st = key_statements[sid]
        assert st["Principal"] == {"Service": f"{service}.amazonaws.com"}
        assert st["Action"] == ["kms:GenerateDataKey*", "kms:Decrypt"]
        assert st["Condition"] == {"StringEquals": {"aws:SourceAccount": account}, "ArnLike": {"aws:SourceArn": source}}
    policy = run.one("aws:sns/topicPolicy:TopicPolicy").inputs
    assert policy["arn"] == topic.outputs["arn"]
    statements = json.loads(policy["policy"])["Statement"]
    assert sorted(s["Principal"]["Service"] for s in statements) == ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
    for s in statements:
        assert (s["Effect"], s["Action"], s["Resource"]) == ("Allow", "sns:Publish", topic.outputs["arn"])
        assert s["Condition"]["StringEquals"] == {"aws:SourceAccount": account}
        service = s["Principal"]["Service"].split(".")[0]
        arn_kind = {"cloudwatch": "cloudwatch:{r}:{a}:alarm:*", "events": "events:{r}:{a}:rule/*"}[service]
        region = run.task_definition_environment()[contract.Env.AWS_REGION]
        assert s["Condition"]["ArnLike"] == {"aws:SourceArn": "arn:aws:" + arn_kind.format(r=region, a=account)}
    assert run.outputs[contract.Output.ALERT_TOPIC_ARN] == topic.outputs["arn"]


def test_subscriptions_come_from_config():
    assert run_stack("dev").of_type("aws:sns/topicSubscription:TopicSubscription") == []
    run = run_stack(
        "dev",
        {
            "alertEmails": ["oncall@example.com", "backup-team@example.org"],
            "alertHttpsEndpoints": ["https://alerts.example.com/sns"],
        },
    )
    topic_arn = run.one(TOPIC).outputs["arn"]
    subs = sorted(
        (r.inputs["protocol"], r.inputs["endpoint"], r.inputs["topic"])
        for r in run.of_type("aws:sns/topicSubscription:TopicSubscription")
    )
    assert subs == [
        ("email", "backup-team@example.org", topic_arn),
        ("email", "oncall@example.com", topic_arn),
        ("https", "https://alerts.example.com/sns", topic_arn),
    ]


def test_dashboard_graphs_every_metric_per_container_and_shows_the_alarms(every_stack):
    run = every_stack
    dashboard = run.one("aws:cloudwatch/dashboard:Dashboard")
    assert (
        dashboard.inputs["dashboardName"]
        == f"export-{run.stack}-dashboard"
        == run.outputs[contract.Output.DASHBOARD_NAME]
    )
    body = json.loads(dashboard.inputs["dashboardBody"])
    alarm_widget, *graphs = body["widgets"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(a.outputs["arn"] for a in run.of_type(ALARM))
    shown = {m[1] for g in graphs for m in g["properties"]["metrics"]}
    assert shown == {v for k, v in vars(contract.Metric).items() if k.isupper()} - {contract.Metric.DRILL_FAILED}
    exported = run.task_definition_environment()[contract.Env.COSMOS_CONTAINERS].split(",")
    for g in graphs:
        assert [m[m.index("Container") + 1] for m in g["properties"]["metrics"]] == exported
        assert all(m[0] == "CosmosExport" for m in g["properties"]["metrics"])


def test_worker_environment_names_the_stack(every_stack):
    assert every_stack.task_definition_environment()[contract.Env.STACK] == every_stack.stack


# --- Config (pure) ---------------------------------------------------------------------------------------------


def problems(stack: str = "dev", **overrides) -> list[str]:
    cfg = stack_config(stack, overrides)
    with pytest.raises(ConfigError) as err:
        load_stack_config(cfg.get, stack, cfg)
    return err.value.problems


def test_bad_alerting_values_name_key_value_and_fix_all_at_once():
    assert problems(
        alertEmails=["oncall@example.com", "not-an-address"],
        alertHttpsEndpoints=["http://hooks.example.com"],
        freshnessMinutes=2,
        continuousBackupDays=14,
    ) == [
        'cosmos-s3-export:alertEmails = ["oncall@example.com", "not-an-address"]: not email addresses: '
        "'not-an-address'; use addresses like 'oncall@example.com'",
        "cosmos-s3-export:alertHttpsEndpoints = [\"http://hooks.example.com\"]: 'http://hooks.example.com' is not an "
        "https:// URL; SNS delivers alerts only to https endpoints here (plain http would carry them unencrypted)",
        'cosmos-s3-export:freshnessMinutes = "2": Input should be greater than or equal to 5; use 5..10080',
        "cosmos-s3-export:continuousBackupDays = 14: Input should be 7 or 30",
    ]
    assert problems(alertHttpsEndpoints=["https://user:pw@hooks.example.com/x"]) == [
        'cosmos-s3-export:alertHttpsEndpoints = ["https://user:pw@hooks.example.com/x"]: \'https://user:pw@hooks.'
        "example.com/x' carries credentials (user:password@); no secret belongs in stack config: use an endpoint that "
        "authenticates the SNS signature instead"
    ]
    assert problems(alertEmails=["a@example.com", "a@example.com"]) == [
        'cosmos-s3-export:alertEmails = ["a@example.com", "a@example.com"]: lists an address more than once; '
        "list each once"
    ]


def test_freshness_against_the_schedule():
    assert problems(freshnessMinutes=300) == [  # dev runs every 6 hours
        "cosmos-s3-export:freshnessMinutes = 300: shorter than the schedule's interval (360 min): the alarm would fire "
        "between any two runs; set it to at least 360 (the default is 720)"
    ]
    assert problems(schedule="at(2027-01-01T00:00:00)") == [
        "cosmos-s3-export:freshnessMinutes = null: cannot be derived from schedule 'at(2027-01-01T00:00:00)' (a one-time "
        "or irregular schedule has no interval); set freshnessMinutes to how long a container may go without a commit"
    ]
    assert problems(schedule="rate(5 days)") == [
        "cosmos-s3-export:freshnessMinutes = null: the default, 2 x the schedule's interval (7200 min), exceeds "
        "CloudWatch's 7-day alarm range; set freshnessMinutes to at most 10080"
    ]
    assert problems(schedule="rate(3 days)", changeFeedMode="AllVersionsAndDeletes", freshnessMinutes=10080) == [
        'cosmos-s3-export:schedule = "rate(3 days)": runs every 4320 min, but AllVersionsAndDeletes reads only the '
        "last 7 days (continuousBackupDays): run at least every 2520 min so a missed run can still be caught up"
    ]


@pytest.mark.parametrize(
    ("schedule", "minutes"),
    [
        ("rate(1 minute)", 1),
        ("rate(6 hours)", 360),
        ("rate(2 days)", 2880),
        ("cron(15 2 * * ? *)", 1440),
        ("cron(0/15 * * * ? *)", 15),
        ("cron(0 8,20 * * ? *)", 720),
        ("cron(0 3 ? * MON-FRI *)", 3 * 1440),  # Friday to Monday
        ("cron(0 3 ? * 2 *)", 7 * 1440),  # AWS day 2 = Monday: weekly
        ("cron(0 3 ? * 1,4 *)", 4 * 1440),  # Sunday and Wednesday: the longer gap, Wednesday to Sunday
        ("cron(0 1 1 * ? *)", 31 * 1440),  # monthly: the longest month
        ("at(2027-01-01T00:00:00)", None),
    ],
)
def test_schedule_interval(schedule, minutes):
    assert schedule_interval_minutes(schedule) == minutes


def test_alerting_keys_are_top_level_config_keys():
    from components.config import CONFIG_KEYS

    assert set(alerting_config.KEYS) <= set(CONFIG_KEYS)
    assert set(alerting_config.KEYS.values()) == set(AlertingConfig.model_fields)
