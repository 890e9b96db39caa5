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
from datetime import date, timedelta
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
            raise ValueError(
                f"not email addresses: {', '.join(map(repr, bad))}; use addresses like 'oncall@example.com'"
            )
        if len(set(v)) != len(v):
            raise ValueError("lists an address more than once; list each once")
        return v

    @field_validator("alert_https_endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        for url in v:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme != "https" or not parts.hostname:
                raise ValueError(
                    f"{url!r} is not an https:// URL; SNS delivers alerts only to https endpoints here "
                    "(plain http would carry them unencrypted)"
                )
            if parts.username or parts.password:
                raise ValueError(
                    f"{url!r} carries credentials (user:password@); no secret belongs in stack config: "
                    "use an endpoint that authenticates the SNS signature instead"
                )
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
                out.append(
                    (
                        "freshnessMinutes",
                        None,
                        f"cannot be derived from schedule {schedule!r} (a one-time or irregular schedule has no "
                        f"interval); set freshnessMinutes to how long a container may go without a commit",
                    )
                )
            elif 2 * interval > MAX_ALARM_RANGE_MINUTES:
                out.append(
                    (
                        "freshnessMinutes",
                        None,
                        f"the default, 2 x the schedule's interval ({interval} min), exceeds CloudWatch's 7-day "
                        f"alarm range; set freshnessMinutes to at most {MAX_ALARM_RANGE_MINUTES}",
                    )
                )
        elif interval is not None and self.freshness_minutes < interval:
            out.append(
                (
                    "freshnessMinutes",
                    self.freshness_minutes,
                    f"shorter than the schedule's interval ({interval} min): the alarm would fire between any "
                    f"two runs; set it to at least {interval} (the default is {2 * interval})",
                )
            )
        # At least two runs before the window alarm, so one missed run is caught up before it fires.
        if (
            change_feed_mode == "AllVersionsAndDeletes"
            and interval is not None
            and 2 * interval > self.backup_window_alarm_minutes
        ):
            out.append(
                (
                    "schedule",
                    schedule,
                    f"runs every {interval} min, but AllVersionsAndDeletes reads only the last "
                    f"{self.continuous_backup_days} days (continuousBackupDays): run at least every "
                    f"{self.backup_window_alarm_minutes // 2} min so a missed run can still be caught up",
                )
            )
        return out


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _cron_values(field: str, lo: int, hi: int, names: tuple[str, ...] = ()) -> set[int] | None:
    """The values an AWS cron field allows (`*`, `a`, `a-b`, `a/n`, `a-b/n`, lists, names); None for L, W, #."""
    for i, name in enumerate(names):
        field = field.upper().replace(name, str(lo + i))
    values: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        if not re.fullmatch(r"\*|\d+(-\d+)?", base) or (step_text and not step_text.isdigit()):
            return None
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            start, end = (int(x) for x in base.split("-"))
        else:
            start = int(base)
            end = hi if step_text else start
        step = int(step_text or 1)
        if not (lo <= start <= end <= hi) or step < 1:
            return None
        values.update(range(start, end + 1, step))
    return values


def _cron_interval_minutes(fields: list[str], start: date) -> int | None:
    """The longest gap between two firings of an AWS cron expression over the 400 days from `start`.

    The times of day are the same on every matching day, so the gaps are those within a day and those
    from a day's last firing to the next matching day's first.
    """
    minute, hour, dom, month, dow, year = fields
    minutes, hours = _cron_values(minute, 0, 59), _cron_values(hour, 0, 23)
    months = _cron_values(month, 1, 12, _MONTHS)
    days = None if dom == "?" else _cron_values(dom, 1, 31)
    weekdays = None if dow == "?" else _cron_values(dow, 1, 7, _AWS_DOW_NAMES)  # AWS: 1 = SUN ... 7 = SAT
    if year != "*" or None in (minutes, hours, months) or (days is None) == (weekdays is None):
        return None  # a year-bound or L/W/# schedule: freshnessMinutes must be given
    assert minutes is not None and hours is not None and months is not None
    times = sorted(h * 60 + m for h in hours for m in minutes)
    matching = [
        d
        for d in (start + timedelta(days=i) for i in range(400))
        if d.month in months
        and (d.day in days if days is not None else (d.isoweekday() % 7 + 1) in (weekdays or set()))
    ]
    if not times or len(matching) < 2:
        return None
    within = max((b - a for a, b in zip(times, times[1:])), default=0)
    across = max((b - a).days * 1440 - times[-1] + times[0] for a, b in zip(matching, matching[1:]))
    return max(within, across)


def schedule_interval_minutes(schedule: str, *, start: date = date(2027, 1, 1)) -> int | None:
    """The longest gap between two runs of an EventBridge Scheduler expression, in minutes.

    rate(): its value. cron(): the longest gap over 400 days (so weekly and monthly schedules count), in
    the schedule's own wall-clock time: a DST shift changes a gap by at most an hour, which the 2x default
    absorbs. at() (one run), or a cron expression using L, W or # or a fixed year: None.
    """
    m = _RATE.match(schedule)
    if m:
        value, unit = int(m.group(1)), m.group(2).rstrip("s")
        return value * {"minute": 1, "hour": 60, "day": 1440}[unit]
    m = _CRON.match(schedule)
    if not m or len(m.group(1).split()) != 6:
        return None
    return _cron_interval_minutes(m.group(1).split(), start)


#: config key -> field of AlertingConfig (the fields' camelCase aliases).
KEYS: dict[str, str] = {field.alias or name: name for name, field in AlertingConfig.model_fields.items()}
