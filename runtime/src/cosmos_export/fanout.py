"""Fan-out over feed ranges (issue 15): the pure pieces so far, the shard spec and the shard assignment.

`plan`, `run --run --shard` and `commit --run` are not written yet (see the runtime README once they are);
they will reuse export.begin_container / read_ranges / commit_container.
"""

from __future__ import annotations

import re

from cosmos_export import contract
from cosmos_export.export import RangePlan

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' (contract.FAN_OUT_SHARD_FORMAT) -> (K, N), 1 <= K <= N; a ValueError naming the value and the fix."""
    match = _SHARD.match(text)
    if not match:
        example = contract.FAN_OUT_SHARD_FORMAT.format(shard=2, shards=4)
        raise ValueError(f"--shard {text!r} is not a shard: use K/N with whole numbers, e.g. {example}")
    shard, shards = int(match.group(1)), int(match.group(2))
    if not 1 <= shard <= shards:
        raise ValueError(f"--shard {text!r}: K must be between 1 and N ({shards}); shards are numbered 1..N")
    return shard, shards


def assign_shards(ranges: tuple[RangePlan, ...], shards: int) -> dict[int, tuple[RangePlan, ...]]:
    """At most `shards` shards of similar size: range i goes to shard (i mod S) + 1, S = min(shards, ranges).

    Range counts per shard differ by at most one. Under hash partitioning the feed ranges hold similar
    amounts of data, and a per-range document count is not cheap to get, so counts are what is balanced.
    """
    if shards < 1:
        raise ValueError(f"shards={shards} must be at least 1")
    used = min(shards, len(ranges))
    return {k: tuple(r for i, r in enumerate(ranges) if i % used == k - 1) for k in range(1, used + 1)}
