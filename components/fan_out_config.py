"""The `fanOut:` block of a stack's configuration: a self-contained, validated model (off by default).

    cosmos-s3-export:fanOut:
      maxShards: 8          # at most this many ECS tasks export one run (2..MAX_SHARDS)
      maxConcurrency: 4     # of which at most this many run at once (default: maxShards)
      timeoutHours: 24      # the whole execution (plan, shards, commit) fails after this long

Unset, the schedule runs the single export task as before. Set, the schedule starts the stack's
Step Functions state machine (components/fan_out.py) instead.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic.alias_generators import to_camel

from cosmos_export import contract

#: Shards of one run. Each shard is a Fargate task and a Map iteration; a Cosmos container has one feed
#: range per physical partition, so more shards than that only add idle tasks. 1000 keeps the Map's
#: items (the plan's shard list) and one account's Fargate task launch rate well inside AWS's limits.
MAX_SHARDS = contract.FAN_OUT_MAX_SHARDS
#: Above this many shards the Map runs in Distributed mode (child workflow executions). An inline Map
#: runs at most 40 iterations at once and keeps every iteration's events in the parent execution's
#: history (25,000 events at most; one ECS .sync iteration with a retry takes ~10): 40 is where
#: inline stops being able to run every shard at once.
INLINE_MAP_MAX_SHARDS = 40
MAX_TIMEOUT_HOURS = 24 * 30
#: Characters an intrinsic function's string literal must escape (' { } \\). The export prefix is the one
#: configured text inside one (the plan key); AWS documents the backslash escape, but moto's interpreter
#: (the only one here) does not parse it, so a fan-out stack's prefix may not contain them.
RESERVED = "'{}\\"


class FanOutConfig(BaseModel):
    """Field names are the keys inside `fanOut` in snake_case (maxShards -> max_shards)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    max_shards: int
    #: None: every shard at once.
    max_concurrency: int | None = None
    timeout_hours: int = 24

    @field_validator("max_shards")
    @classmethod
    def _shards(cls, v: int) -> int:
        if not 2 <= v <= MAX_SHARDS:
            raise ValueError(
                f"use 2..{MAX_SHARDS} (1 shard is the single task: unset fanOut instead; more than "
                f"{MAX_SHARDS} Fargate tasks per run is beyond what one run should launch)"
            )
        return v

    @field_validator("max_concurrency")
    @classmethod
    def _concurrency(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= MAX_SHARDS:
            raise ValueError(f"use 1..{MAX_SHARDS}, at most fanOut.maxShards, or unset it (every shard at once)")
        return v

    @field_validator("timeout_hours")
    @classmethod
    def _timeout(cls, v: int) -> int:
        if not 1 <= v <= MAX_TIMEOUT_HOURS:
            raise ValueError(f"use 1..{MAX_TIMEOUT_HOURS} hours")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> FanOutConfig:
        if self.max_concurrency is not None and self.max_concurrency > self.max_shards:
            from .config import _CrossFieldError  # the stack model's one way to name a key in a block

            problems: list[tuple[str, Any, str]] = [
                (
                    "fanOut.maxConcurrency",
                    self.max_concurrency,
                    f"more than fanOut.maxShards ({self.max_shards}): at most that many shards exist; "
                    f"lower it to {self.max_shards} or less, or unset it",
                )
            ]
            raise _CrossFieldError(problems)
        return self

    @property
    def concurrency(self) -> int:
        return self.max_concurrency or self.max_shards

    @property
    def distributed(self) -> bool:
        return self.max_shards > INLINE_MAP_MAX_SHARDS
