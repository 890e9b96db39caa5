"""Runs of the real program under mocks, shared by the infra tests (each run takes ~1 s)."""

from __future__ import annotations

import functools

import pytest

from sandbox.mocked_stack import WITHOUT_RESTORE, StackRun, run_stack, stack_names


@functools.lru_cache(maxsize=None)
def cached_run(stack: str) -> StackRun:
    return run_stack(stack)


@functools.lru_cache(maxsize=None)
def cached_export_only_run(stack: str) -> StackRun:
    """The stack file with its restore block and snapshot schedule removed."""
    return run_stack(stack, WITHOUT_RESTORE)


@pytest.fixture(params=stack_names())
def every_stack(request) -> StackRun:
    """Every stacks/Pulumi.<stack>.yaml, discovered by glob, with its real config."""
    return cached_run(request.param)


@pytest.fixture
def dev() -> StackRun:
    return cached_run("dev")


@pytest.fixture
def prod() -> StackRun:
    return cached_run("prod")


@pytest.fixture
def dev_export_only() -> StackRun:
    return cached_export_only_run("dev")


@pytest.fixture(params=stack_names())
def every_stack_export_only(request) -> StackRun:
    return cached_export_only_run(request.param)
