"""WINNOW_LOG_FORMAT=json: one JSON object a line, from the application's loggers and from
uvicorn's, with the fields a log collector indexes."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest
from uvicorn.config import LOGGING_CONFIG

from core.logs import JsonLines, json_handlers, json_log_config


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The loggers the config touches, as they were (later tests log through them)."""
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_a_record_is_one_json_object_with_level_logger_and_time() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("winnow.test.logs")
    logger.addHandler(handler)
    json_handlers(logger)
    try:
        logger.warning("job %s failed", 12)
        try:
            raise ValueError("broken")
        except ValueError:
            logger.exception("with a traceback")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "job 12 failed" and first["level"] == "WARNING"
    assert first["logger"] == "winnow.test.logs" and "time" in first and "process" in first
    assert second["message"] == "with a traceback" and "ValueError: broken" in second["exc_info"]


def test_uvicorn_and_application_loggers_write_json_with_the_config(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = json_log_config(LOGGING_CONFIG)
    assert LOGGING_CONFIG["formatters"]["default"]["()"] == "uvicorn.logging.DefaultFormatter"
    logging.config.dictConfig(config)
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("api.routes.jobs").warning("the broker refused job 3")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["logger"], r["message"]) for r in lines] == [
        ("uvicorn.error", "Started server process"),
        ("api.routes.jobs", "the broker refused job 3"),
    ]
    assert isinstance(logging.getLogger("uvicorn").handlers[0].formatter, JsonLines)
