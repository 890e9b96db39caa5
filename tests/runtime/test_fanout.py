"""The fan-out's pure pieces: the shard spec and the assignment of feed ranges to shards."""

from __future__ import annotations

import pytest

from cosmos_export import contract
from cosmos_export.export import RangePlan
from cosmos_export.fanout import assign_shards, parse_shard


def _ranges(n: int) -> tuple[RangePlan, ...]:
    return tuple(RangePlan(i, f"r{i}", {"i": i}, "change_feed", None, "LatestVersion", False) for i in range(n))


def test_the_contract_shard_argument_parses():
    argv = contract.fan_out_shard_command("20261203T090000Z-0a1b2c3d", 3, 4)
    assert parse_shard(argv[argv.index("--shard") + 1]) == (3, 4)


@pytest.mark.parametrize("text", ["0/4", "5/4", "x/4", "3", "-1/2", ""])
def test_a_bad_shard_is_refused_with_the_form(text):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)


@pytest.mark.parametrize("ranges,shards", [(4, 1), (4, 2), (4, 4), (7, 3), (3, 8), (1, 2)])
def test_every_range_in_exactly_one_shard_and_counts_within_one(ranges, shards):
    plan = _ranges(ranges)
    assigned = assign_shards(plan, shards)
    assert sorted(assigned) == list(range(1, min(ranges, shards) + 1))
    flat = [r.index for rs in assigned.values() for r in rs]
    assert sorted(flat) == list(range(ranges))
    sizes = [len(rs) for rs in assigned.values()]
    assert max(sizes) - min(sizes) <= 1


def test_zero_shards_is_refused():
    with pytest.raises(ValueError, match="shards=0"):
        assign_shards(_ranges(2), 0)
