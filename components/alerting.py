"""Alarms, the alert topic and the dashboard of one stack.

What alarms (each publishes to one KMS-encrypted SNS topic):

- ``{name}-stale-{container}``: no successful commit of the container within freshnessMinutes
  (the worker's ``Success`` metric; missing data is breaching, so a worker that never runs alarms too).
- ``{name}-task-failed``: an EventBridge rule on ECS Task State Change: a task of exactly this family
  stopped with a non-zero exit code.
- ``{name}-schedule-dlq``: the scheduler's dead-letter queue holds a message (a run that never started).
- ``{name}-backup-window-{container}`` (AllVersionsAndDeletes only): no successful commit for half the
  account's continuous-backup window. The change feed's read point is the last commit: once it is older
  than the window, deltas are lost for good. (Measured on Success rather than LagSeconds, which also grows
  while an idle container is perfectly current, and which a failing run never emits.)
- ``{name}-drill-failed-{container}``: a restore drill reported failure (``DrillFailed`` = 1, emitted by
  `cosmos-export drill`).
- ``{name}-fan-out-{failed|timed-out|aborted}`` (with ``fanOut`` only): an execution of the fan-out state
  machine failed, timed out or was aborted (AWS/States ExecutionsFailed, ExecutionsTimedOut,
  ExecutionsAborted). Its ECS tasks are the export family, so the task-failed rule sees them too.

Policy documents and the event pattern are pure functions, tested without mocks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from cosmos_export.contract import CONTAINER_DIMENSIONS, METRICS_NAMESPACE, MODE_DIMENSIONS, Dimension, Metric

from . import naming
from .policies import _key_admin  # the stack's keys share one administration statement

Doc = dict[str, Any]


# --- Pure builders -------------------------------------------------------------


def task_failed_pattern(*, region: str, account_id: str, families: list[str]) -> Doc:
    """ECS Task State Change of exactly one of `families` (any revision), stopped, a container exit code not 0.

    The stack's families are its export task, its snapshot task and its restore/drill task, where declared.
    The trailing ':' keeps a family that merely starts with one of them (export-dev-other) out. A task that
    never started has no exit code and is not matched here: the stale alarm catches it.
    """
    return {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "account": [account_id],
        "region": [region],
        "detail": {
            "lastStatus": ["STOPPED"],
            "taskDefinitionArn": [
                {"prefix": f"arn:aws:ecs:{region}:{account_id}:task-definition/{family}:"} for family in families
            ],
            "containers": {"exitCode": [{"anything-but": 0}]},
        },
    }


def topic_policy(*, topic_arn: str, account_id: str, region: str) -> Doc:
    """Only CloudWatch alarms and EventBridge rules of this account may publish."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CloudWatchAlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{region}:{account_id}:alarm:*"},
                },
            },
            {
                "Sid": "EventBridgeRulesPublish",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnLike": {"aws:SourceArn": f"arn:aws:events:{region}:{account_id}:rule/*"},
                },
            },
        ],
    }


def topic_key_policy(*, account_id: str, region: str) -> Doc:
    """Administered through IAM (as the stack's other keys); used only by CloudWatch alarms and EventBridge rules
    of this account, each bound to its source, to encrypt what they publish to the topic."""
    statements = [_key_admin(account_id)]
    for sid, service, source in (
        ("CloudWatchAlarmsEncrypt", "cloudwatch.amazonaws.com", f"arn:aws:cloudwatch:{region}:{account_id}:alarm:*"),
        ("EventBridgeRulesEncrypt", "events.amazonaws.com", f"arn:aws:events:{region}:{account_id}:rule/*"),
    ):
        statements.append(
            {
                "Sid": sid,
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": ["kms:GenerateDataKey*", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}, "ArnLike": {"aws:SourceArn": source}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def container_dimensions(*, stack: str, account: str, database: str, container: str) -> dict[str, str]:
    values = {
        Dimension.STACK: stack,
        Dimension.ACCOUNT: account,
        Dimension.DATABASE: database,
        Dimension.CONTAINER: container,
    }
    assert tuple(values) == CONTAINER_DIMENSIONS
    return values


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch metric alarm, as plain values (the component declares it; tests read it)."""

    name: str
    description: str
    namespace: str
    metric: str
    dimensions: dict[str, Any]  # values are strings (the DLQ's name may be a pulumi Output)
    statistic: str
    period: int
    evaluation_periods: int
    threshold: float
    comparison: str
    treat_missing_data: str


def alarm_specs(
    *,
    name: str,
    stack: str,
    account: str,
    database: str,
    containers: list[str],
    freshness_minutes: int,
    change_feed_mode: str,
    backup_window_alarm_minutes: int,
    backup_window_days: int,
    dlq_name: Any,
    state_machine_arn: str | None = None,
) -> list[AlarmSpec]:
    specs: list[AlarmSpec] = []
    for container in containers:
        dims = container_dimensions(stack=stack, account=account, database=database, container=container)
        specs.append(
            AlarmSpec(
                f"{name}-stale-{container}",
                f"{account}/{database}/{container} ({stack}): no successful export commit within {freshness_minutes} "
                f"minutes. Check: cosmos-export status; the worker's log group; cosmos-export doctor.",
                METRICS_NAMESPACE,
                Metric.SUCCESS,
                dims,
                "Sum",
                freshness_minutes * 60,
                1,
                1,
                "LessThanThreshold",
                "breaching",
            )
        )
        if change_feed_mode == "AllVersionsAndDeletes":
            # CloudWatch evaluates at most 7 days: beyond a day, 1-day periods, every one without a success.
            period, periods = (
                (backup_window_alarm_minutes * 60, 1)
                if backup_window_alarm_minutes <= 1440
                else (86400, backup_window_alarm_minutes // 1440)
            )
            specs.append(
                AlarmSpec(
                    f"{name}-backup-window-{container}",
                    f"{account}/{database}/{container} ({stack}): no successful commit for "
                    f"{period * periods // 3600} hours; AllVersionsAndDeletes reads only the last "
                    f"{backup_window_days} days: fix the export before its read point falls out of the window.",
                    METRICS_NAMESPACE,
                    Metric.SUCCESS,
                    dims,
                    "Sum",
                    period,
                    periods,
                    1,
                    "LessThanThreshold",
                    "breaching",
                )
            )
        specs.append(
            AlarmSpec(
                f"{name}-drill-failed-{container}",
                f"{account}/{database}/{container} ({stack}): a restore drill failed (its report is under "
                f"drills/ of the container's prefix; cosmos-export status shows the newest).",
                METRICS_NAMESPACE,
                Metric.DRILL_FAILED,
                dims,
                "Maximum",
                3600,
                1,
                1,
                "GreaterThanOrEqualToThreshold",
                "notBreaching",
            )
        )
    specs.append(
        AlarmSpec(
            f"{name}-schedule-dlq",
            f"{stack}: EventBridge Scheduler could not start the export task (a message is in its dead-letter "
            f"queue: its attributes say why).",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": dlq_name},
            "Maximum",
            300,
            1,
            0,
            "GreaterThanThreshold",
            "notBreaching",
        )
    )
    if state_machine_arn is not None:
        for suffix, metric, what in (
            ("failed", "ExecutionsFailed", "failed"),
            ("timed-out", "ExecutionsTimedOut", "timed out (fanOut.timeoutHours)"),
            ("aborted", "ExecutionsAborted", "was aborted"),
        ):
            specs.append(
                AlarmSpec(
                    f"{name}-fan-out-{suffix}",
                    f"{stack}: a fan-out export execution {what}; nothing of that run was committed. Its "
                    f"execution history names the failed state (Plan, ReadPlan, Shards or Commit).",
                    "AWS/States",
                    metric,
                    {"StateMachineArn": state_machine_arn},
                    "Sum",
                    300,
                    1,
                    0,
                    "GreaterThanThreshold",
                    "notBreaching",
                )
            )
    return specs


def dashboard_body(
    *, region: str, stack: str, account: str, database: str, containers: list[str], alarm_arns: list[str]
) -> Doc:
    """The CloudWatch dashboard: the worker's metrics per container, and the alarms' states."""

    def per_container(metric: str, stat: str) -> list[list[Any]]:
        return [
            [
                METRICS_NAMESPACE,
                metric,
                *sum(
                    (
                        [k, v]
                        for k, v in container_dimensions(
                            stack=stack, account=account, database=database, container=c
                        ).items()
                    ),
                    [],
                ),
                {"stat": stat, "label": c},
            ]
            for c in containers
        ]

    graphs = [
        ("Documents exported", Metric.DOCUMENTS, "Sum"),
        ("Bytes written", Metric.BYTES, "Sum"),
        ("Lag: now minus newest committed _ts (s)", Metric.LAG, "Maximum"),
        ("Successful commits", Metric.SUCCESS, "Sum"),
        ("Failed runs", Metric.FAILURE, "Sum"),
        ("Request units", Metric.REQUEST_UNITS, "Sum"),
        ("Request units per second (run average)", Metric.REQUEST_UNITS_PER_SECOND, "Maximum"),
        ("Throttled requests (429)", Metric.THROTTLED_REQUESTS, "Sum"),
        ("Run seconds", Metric.SECONDS, "Maximum"),
        ("Parts written", Metric.PARTS, "Sum"),
    ]
    widgets: list[Doc] = [
        {
            "type": "alarm",
            "x": 0,
            "y": 0,
            "width": 24,
            "height": 3,
            "properties": {"title": f"cosmos-export {stack}: alarms", "alarms": alarm_arns},
        }
    ]
    for i, (title, metric, stat) in enumerate(graphs):
        widgets.append(
            {
                "type": "metric",
                "x": (i % 2) * 12,
                "y": 3 + (i // 2) * 6,
                "width": 12,
                "height": 6,
                "properties": {
                    "title": title,
                    "region": region,
                    "view": "timeSeries",
                    "stacked": False,
                    "period": 3600,
                    "metrics": per_container(metric, stat),
                },
            }
        )
    return {"widgets": widgets}


# --- The component ---------------------------------------------------------------


@dataclass
class AlertingArgs:
    stack: str
    account_id: str
    region: str
    cosmos_account: str
    database: str
    containers: list[str]
    task_families: list[str]
    dlq_name: pulumi.Input[str]
    dlq_arn: pulumi.Input[str]
    freshness_minutes: int
    change_feed_mode: str
    backup_window_days: int
    backup_window_alarm_minutes: int
    alert_emails: list[str] = field(default_factory=list)
    alert_https_endpoints: list[str] = field(default_factory=list)
    #: With `fanOut`: the state machine whose failed, timed-out and aborted executions alarm.
    state_machine_arn: str | None = None


class Alerting(pulumi.ComponentResource):
    topic_arn: pulumi.Output[str]
    dashboard_name: pulumi.Output[str]

    def __init__(self, name: str, args: AlertingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("cosmos-s3-export:aws:Alerting", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        a = args

        key = aws.kms.Key(
            f"{name}-alerts-key",
            description=f"Encrypts the cosmos-export {a.stack} alert topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=json.dumps(topic_key_policy(account_id=a.account_id, region=a.region)),
            tags={naming.STACK_TAG: a.stack, naming.PURPOSE_TAG: "alerts"},
            opts=child,
        )
        topic = aws.sns.Topic(f"{name}-alerts", kms_master_key_id=key.arn, opts=child)
        aws.sns.TopicPolicy(
            f"{name}-alerts-policy",
            arn=topic.arn,
            policy=topic.arn.apply(
                lambda arn: json.dumps(topic_policy(topic_arn=arn, account_id=a.account_id, region=a.region))
            ),
            opts=child,
        )
        for i, email in enumerate(a.alert_emails):
            aws.sns.TopicSubscription(
                f"{name}-alerts-email-{i}", topic=topic.arn, protocol="email", endpoint=email, opts=child
            )
        for i, url in enumerate(a.alert_https_endpoints):
            aws.sns.TopicSubscription(
                f"{name}-alerts-https-{i}", topic=topic.arn, protocol="https", endpoint=url, opts=child
            )

        rule = aws.cloudwatch.EventRule(
            f"{name}-task-failed",
            description=f"cosmos-export {a.stack}: an export task stopped with a non-zero exit code",
            event_pattern=json.dumps(
                task_failed_pattern(region=a.region, account_id=a.account_id, families=a.task_families)
            ),
            opts=child,
        )
        aws.cloudwatch.EventTarget(f"{name}-task-failed-target", rule=rule.name, arn=topic.arn, opts=child)

        alarms = []
        for spec in alarm_specs(
            name=name,
            stack=a.stack,
            account=a.cosmos_account,
            database=a.database,
            containers=a.containers,
            freshness_minutes=a.freshness_minutes,
            change_feed_mode=a.change_feed_mode,
            backup_window_alarm_minutes=a.backup_window_alarm_minutes,
            backup_window_days=a.backup_window_days,
            dlq_name=a.dlq_name,
            state_machine_arn=a.state_machine_arn,
        ):
            alarms.append(
                aws.cloudwatch.MetricAlarm(
                    spec.name,
                    alarm_description=spec.description,
                    namespace=spec.namespace,
                    metric_name=spec.metric,
                    dimensions=spec.dimensions,
                    statistic=spec.statistic,
                    period=spec.period,
                    evaluation_periods=spec.evaluation_periods,
                    threshold=spec.threshold,
                    comparison_operator=spec.comparison,
                    treat_missing_data=spec.treat_missing_data,
                    alarm_actions=[topic.arn],
                    ok_actions=[topic.arn],
                    opts=child,
                )
            )
        dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=f"{name}-dashboard",  # export-<stack>-...: the deployer manages only its stack's names
            dashboard_body=pulumi.Output.all(*[alarm.arn for alarm in alarms]).apply(
                lambda arns: json.dumps(
                    dashboard_body(
                        region=a.region,
                        stack=a.stack,
                        account=a.cosmos_account,
                        database=a.database,
                        containers=a.containers,
                        alarm_arns=list(arns),
                    )
                )
            ),
            opts=child,
        )

        self.topic_arn = topic.arn
        self.dashboard_name = dashboard.dashboard_name
        self.register_outputs({"alertTopicArn": self.topic_arn, "dashboardName": self.dashboard_name})


#: Both dimension sets exist on every metric; alarms use the container set (see contract.CONTAINER_DIMENSIONS).
assert MODE_DIMENSIONS[: len(CONTAINER_DIMENSIONS)] == CONTAINER_DIMENSIONS
