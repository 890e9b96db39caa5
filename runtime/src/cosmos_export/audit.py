"""Structured audit logs (JSON lines on stdout) and an optional progress bar (stderr TTY only)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

import structlog

#: A JWT (header.payload.signature, base64url, header starting '{"'): never written to any log.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact(text: str) -> str:
    return _JWT.sub("<redacted-jwt>", text)


class _RedactFilter(logging.Filter):
    """Last line of defence on the handler: whatever a library logs, a token is masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "eyJ" in message:
            record.msg, record.args = redact(message), ()
        return True


def _redact_event(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    return {k: redact(v) if isinstance(v, str) and "eyJ" in v else v for k, v in event.items()}


#: Third-party loggers that could print request/response bodies (tokens!) at DEBUG: kept at WARNING.
_QUIET = ("botocore", "boto3", "urllib3", "azure", "msal", "s3transfer")


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """JSON logs, one object per line, to stdout (CloudWatch via the awslogs driver)."""
    numeric = logging.getLevelName(level)
    # Library records (azure, botocore, ...) go out as JSON lines too, so the
    # stream stays machine-readable; the filter masks anything JWT-shaped.
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _redact_event,
            ],
        )
    )
    handler.addFilter(_RedactFilter())
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_event,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # None: the current sys.stdout at each get_logger() (tests swap it).
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


class Logger(Protocol):
    """What the worker's parts log through: structlog's bound logger (keyword fields), or as_logger()'s adapter."""

    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...


class _StdlibLogger:
    """A stdlib logger behind the Logger interface: the fields travel as `extra`."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def info(self, event: str, **fields: Any) -> None:
        self._logger.info(event, extra={"fields": fields})

    def warning(self, event: str, **fields: Any) -> None:
        self._logger.warning(event, extra={"fields": fields})


def as_logger(log: Logger | logging.Logger | None, name: str) -> Logger:
    """`log` as a Logger; None: the stdlib logger `name` (silent unless logging is configured)."""
    if log is None:
        log = logging.getLogger(name)
    return _StdlibLogger(log) if isinstance(log, logging.Logger) else log


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("cosmos_export").bind(**bound)


def progress_wanted(stream: Any = None) -> bool:
    """A progress bar is drawn only on a terminal (never in ECS logs)."""
    return bool(getattr(stream or sys.stderr, "isatty", lambda: False)())


class Progress:
    """Documents exported, rate and ETA: a rich bar when stderr is a terminal, nothing otherwise."""

    def __init__(self, description: str, total: int | None = None, stream: Any = None):
        self._stream = stream or sys.stderr
        self._bar = None
        self._task = None
        if getattr(self._stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task: Any) -> Text:
                    return Text(f"{task.speed or 0:,.0f} docs/s")

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                Rate(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self._stream),
                transient=False,
            )
            self._task = self._bar.add_task(description, total=total)

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def advance(self, documents: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, documents)

    def __enter__(self) -> "Progress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
