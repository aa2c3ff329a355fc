"""Logs as one JSON object a line, for log collectors (WINNOW_LOG_FORMAT=json).

The API (uvicorn's loggers and the application's) and the workers (Celery's) use the same
formatter, so a collector reads every process of a deployment alike: a time, a level, the
logger, the message, the process, and an exception's traceback as one field.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FIELDS = ["levelname", "name", "message", "process"]


class JsonLines(JsonFormatter):
    """python-json-logger's formatter with Winnow's fields, constructible without
    arguments (as logging.config.dictConfig and Celery's signals need it)."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        super().__init__(
            FIELDS, rename_fields={"levelname": "level", "name": "logger"}, timestamp="time"
        )


def json_handlers(logger: logging.Logger) -> None:
    """Give the handlers a logger already has (Celery's) the JSON formatter."""
    for handler in logger.handlers:
        handler.setFormatter(JsonLines())


def json_log_config(base: dict[str, Any]) -> dict[str, Any]:
    """A logging.config dict like ``base`` (uvicorn's) with every formatter JSON, and the
    application's loggers (which propagate to the root) on its default handler too."""
    config = copy.deepcopy(base)
    for name in config["formatters"]:
        config["formatters"][name] = {"()": f"{__name__}.JsonLines"}
    config["root"] = {"handlers": ["default"], "level": "INFO"}
    return config
