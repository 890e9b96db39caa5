"""The alerting part of a stack's configuration: a self-contained, validated model.

Config keys (flat in the stack file, gathered into this model by config.py):

=======================  =====================================================================
alertEmails              email addresses subscribed to the stack's alert topic
alertHttpsEndpoints      https:// URLs subscribed to it (each must confirm its subscription)
freshnessMinutes         a container without a successful commit this long alarms
                         (default: 2 x the schedule's interval)
continuousBackupDays     the Cosmos account's continuous-backup window, 7 or 30 (AllVersionsAndDeletes)
=======================  =====================================================================

Pure functions (`schedule_interval_minutes`, `problems`) are tested without mocks.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

#: CloudWatch limits: period is a multiple of 60 s, and an alarm evaluates at most 7 days.
MAX_ALARM_RANGE_MINUTES = 7 * 24 * 60
MIN_FRESHNESS_MINUTES = 5
#: The AllVersionsAndDeletes alarm fires once the change feed's read point is this share of the window old.
BACKUP_WINDOW_ALARM_SHARE = 0.5

_EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_AWS_DOW_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

class AlertingConfig(BaseModel):
    """Like config.py's sections: field names are the config keys in snake_case (alertEmails -> alert_emails)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    alert_emails: list[str] = []
    alert_https_endpoints: list[str] = []
    freshness_minutes: int | None = Field(default=None, ge=MIN_FRESHNESS_MINUTES, le=MAX_ALARM_RANGE_MINUTES)
    continuous_backup_days: Literal[7, 30] = 7

    @field_validator("continuous_backup_days", mode="before")
    @classmethod
    def _days_from_string(cls, v: Any) -> Any:
        return int(v) if isinstance(v, str) and v.strip().isdigit() else v  # config values arrive as strings

    @field_validator("alert_emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if not isinstance(e, str) or not _EMAIL.match(e)]
        if bad:
            raise ValueError(f"not email addresses: {', '.join(map(repr, bad))}; use addresses like 'oncall@example.com'")
        if len(set(v)) != len(v):
            raise ValueError("lists an address more than once; list each once")
        return v

    @field_validator("alert_https_endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        for url in v:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme != "https" or not parts.hostname:
                raise ValueError(f"{url!r} is not an https:// URL; SNS delivers alerts only to https endpoints here "
                                 "(plain http would carry them unencrypted)")
            if parts.username or parts.password:
                raise ValueError(f"{url!r} carries credentials (user:password@); no secret belongs in stack config: "
                                 "use an endpoint that authenticates the SNS signature instead")
        if len(set(v)) != len(v):
            raise ValueError("lists an endpoint more than once; list each once")
        return v

    @property
    def backup_window_alarm_minutes(self) -> int:
        """When the AllVersionsAndDeletes alarm fires: half the window, within CloudWatch's 7-day maximum."""
        return min(int(self.continuous_backup_days * 24 * 60 * BACKUP_WINDOW_ALARM_SHARE), MAX_ALARM_RANGE_MINUTES)

    def effective_freshness_minutes(self, schedule: str) -> int:
        """freshnessMinutes, or 2 x the schedule's interval; call only when `problems` found none."""
        if self.freshness_minutes is not None:
            return self.freshness_minutes
        interval = schedule_interval_minutes(schedule)
        assert interval is not None, "problems() reports a schedule without an interval"
        return max(2 * interval, MIN_FRESHNESS_MINUTES)

    def problems(self, *, schedule: str, change_feed_mode: str) -> list[tuple[str, Any, str]]:
        """Rules across this model and the schedule: (config key, bad value, message with the fix)."""
        out: list[tuple[str, Any, str]] = []
        interval = schedule_interval_minutes(schedule)
        if self.freshness_minutes is None:
            if interval is None:
                out.append(("freshnessMinutes", None,
                            f"cannot be derived from schedule {schedule!r} (a one-time or irregular schedule has no "
                            f"interval); set freshnessMinutes to how long a container may go without a commit"))
            elif 2 * interval > MAX_ALARM_RANGE_MINUTES:
                out.append(("freshnessMinutes", None,
                            f"the default, 2 x the schedule's interval ({interval} min), exceeds CloudWatch's 7-day "
                            f"alarm range; set freshnessMinutes to at most {MAX_ALARM_RANGE_MINUTES}"))
        elif interval is not None and self.freshness_minutes < interval:
            out.append(("freshnessMinutes", self.freshness_minutes,
                        f"shorter than the schedule's interval ({interval} min): the alarm would fire between any "
                        f"two runs; set it to at least {interval} (the default is {2 * interval})"))
        # At least two runs before the window alarm, so one missed run is caught up before it fires.
        if change_feed_mode == "AllVersionsAndDeletes" and interval is not None and \
                2 * interval > self.backup_window_alarm_minutes:
            out.append(("schedule", schedule,
                        f"runs every {interval} min, but AllVersionsAndDeletes reads only the last "
                        f"{self.continuous_backup_days} days (continuousBackupDays): run at least every "
                        f"{self.backup_window_alarm_minutes // 2} min so a missed run can still be caught up"))
        return out


def _aws_cron_to_croniter(fields: list[str]) -> str:
    """AWS's 6-field cron (min hour dom month dow year, '?' allowed, dow 1-7 = SUN-SAT) as croniter's 5 fields."""
    minute, hour, dom, month, dow, _year = fields

    def shift(match: re.Match) -> str:
        return str(int(match.group(0)) - 1)

    dow = "*" if dow == "?" else re.sub(r"(?<![#\d])\d+", shift, dow)
    return " ".join([minute, hour, "*" if dom == "?" else dom, month, dow])


def schedule_interval_minutes(schedule: str, *, start: datetime | None = None) -> int | None:
    """The longest gap between two runs of an EventBridge Scheduler expression, in minutes.

    rate(): its value. cron(): the longest gap over the next 8 weeks (so weekly schedules count), in UTC:
    a time zone's DST shift changes a gap by at most an hour, which the 2x default absorbs. at() (one run)
    or a cron expression croniter cannot follow: None.
    """
    m = _RATE.match(schedule)
    if m:
        value, unit = int(m.group(1)), m.group(2).rstrip("s")
        return value * {"minute": 1, "hour": 60, "day": 1440}[unit]
    m = _CRON.match(schedule)
    if not m or len(m.group(1).split()) != 6:
        return None
    from croniter import croniter  # type: ignore[import-untyped]  # no stubs shipped

    try:
        expr = _aws_cron_to_croniter(m.group(1).split())
        it = croniter(expr, start or datetime(2027, 1, 1))
        times = [it.get_next(datetime) for _ in range(2)]
        horizon = times[0] + timedelta(weeks=8)
        while times[-1] < horizon and len(times) < 5000:
            times.append(it.get_next(datetime))
    except (ValueError, KeyError, TypeError):  # croniter's errors derive from ValueError/KeyError
        return None
    return int(max((b - a for a, b in zip(times, times[1:]))).total_seconds() // 60)


#: config key -> field of AlertingConfig (the fields' camelCase aliases).
KEYS: dict[str, str] = {field.alias or name: name for name, field in AlertingConfig.model_fields.items()}
