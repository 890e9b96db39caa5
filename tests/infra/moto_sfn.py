"""moto's Step Functions interpreter (its port of LocalStack's ASL engine), made to run ECS `.sync` states.

What moto 5 lacks, restored here and nowhere else:

- Its `StateTaskService._normalise_parameters` / `_normalise_response` are empty, so an optimized
  integration hands boto3 the state's PascalCase parameters (`Cluster`, ...) and botocore refuses them
  (`KeyError: 'Cluster'`). LocalStack's own versions map them through the service's botocore shapes with
  the helpers moto did port (`_to_boto_request`, `_from_boto_response`); these two functions do the same.
- moto's ECS runs nothing. `EcsRunner` replaces what a Fargate task would do: it hands each RunTask's
  container command to a callable (the worker's commands, or a stand-in), and a failing call leaves the
  task STOPPED with a non-zero exit code, which real Step Functions turns into States.TaskFailed
  (moto's `.sync` resolver only waits for STOPPED, so `sync_resolver` adds that check).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import botocore.session
from moto.ecs import models as ecs_models
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service,
    state_task_service_ecs,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

_session = botocore.session.get_session()


def _operation(self, boto_service_name, service_action_name):
    service = self._get_boto_service_name(boto_service_name=boto_service_name)
    action = self._get_boto_service_action(service_action_name=service_action_name)
    model = _session.get_service_model(service)
    name = next(n for n in model.operation_names if state_task_service.camel_to_snake_case(n) == action)
    return model.operation_model(name)


def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
    shape = _operation(self, boto_service_name, service_action_name).input_shape
    if shape is not None:
        self._to_boto_request(parameters, shape)


def _normalise_response(self, response, boto_service_name=None, service_action_name=None):
    shape = _operation(self, boto_service_name, service_action_name).output_shape
    if shape is not None:
        self._from_boto_response(response, shape)


Command = Callable[[list[str]], int]


class EcsRunner:
    """Runs each RunTask's container command through `run` (returns the exit code) and records it."""

    def __init__(self, run: Command):
        self.run = run
        self.commands: list[list[str]] = []
        self._lock = threading.Lock()

    def install(self) -> Callable[[], None]:
        """Patch moto; returns the function that undoes it."""
        saved = [
            (state_task_service.StateTaskService, "_normalise_parameters"),
            (state_task_service.StateTaskService, "_normalise_response"),
            (ecs_models.EC2ContainerServiceBackend, "run_task"),
            (state_task_service_ecs.StateTaskServiceEcs, "_build_sync_resolver"),
        ]
        originals = [(owner, attr, owner.__dict__[attr]) for owner, attr in saved]
        run_task = ecs_models.EC2ContainerServiceBackend.run_task
        signature = inspect.signature(run_task)
        build_sync_resolver = state_task_service_ecs.StateTaskServiceEcs._build_sync_resolver
        runner = self

        def patched_run_task(backend, *args: Any, **kwargs: Any):
            tasks = run_task(backend, *args, **kwargs)
            bound = signature.bind(backend, *args, **kwargs).arguments
            (override,) = (bound.get("overrides") or {}).get("containerOverrides", [])
            command = list(override["command"])
            with runner._lock:
                runner.commands.append(command)
            code = runner.run(command)
            for task in tasks:
                for container in task.containers:
                    container.exitCode = code
                task.last_status = "STOPPED"
            return tasks

        def patched_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials):
            resolve = build_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials)

            def check():
                task = resolve()
                if task is None:
                    return None
                codes = [c.get("ExitCode") for c in task.get("Containers", [])]
                if any(code not in (0, None) for code in codes):
                    raise FailureEventException(
                        FailureEvent(
                            env=env,
                            error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                            event_type=HistoryEventType.TaskFailed,
                            event_details=EventDetails(
                                taskFailedEventDetails=TaskFailedEventDetails(
                                    error="States.TaskFailed",
                                    cause=f"container exit codes {codes}",
                                    resource=self._get_sfn_resource(),
                                    resourceType=self._get_sfn_resource_type(),
                                )
                            ),
                        )
                    )
                return task

            return check

        state_task_service.StateTaskService._normalise_parameters = _normalise_parameters  # type: ignore[method-assign]
        state_task_service.StateTaskService._normalise_response = _normalise_response  # type: ignore[method-assign]
        ecs_models.EC2ContainerServiceBackend.run_task = patched_run_task  # type: ignore[method-assign,assignment]
        state_task_service_ecs.StateTaskServiceEcs._build_sync_resolver = patched_sync_resolver  # type: ignore[method-assign]

        def undo() -> None:
            for owner, attr, value in originals:
                setattr(owner, attr, value)

        return undo
