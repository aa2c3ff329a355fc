"""The registry of job kinds: every kind has every part, and everything derives from it."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from core.kinds import KINDS, JobKind, JobRequest, kind_of
from core.params import JobParams
from core.queue import QUEUES


@pytest.mark.parametrize("kind", list(KINDS.values()), ids=lambda k: k.name.value)
def test_every_kind_has_every_part(kind: JobKind) -> None:
    assert issubclass(kind.params, JobParams)
    assert kind.task.startswith("winnow.") and kind.task.endswith(kind.name.value)
    assert kind.queue in QUEUES
    module, _, function = kind.function.partition(":")
    assert module.startswith("workers.") and function
    assert kind.title.strip() and kind.progress.strip()
    assert kind.time_limit > 0
    assert set(kind.form) <= set(kind.params.model_fields), "a form field the params lack"


@pytest.mark.parametrize("kind", list(KINDS.values()), ids=lambda k: k.name.value)
def test_every_kind_has_a_worker_task_that_runs_its_function(kind: JobKind) -> None:
    from workers.app import app
    from workers.tasks import job_function

    task = app.tasks[kind.task]
    assert task.soft_time_limit == kind.time_limit
    assert callable(job_function(kind))
    assert kind.queue in {q.name for q in app.conf.task_queues}


def test_the_job_request_schema_takes_exactly_the_requestable_kinds() -> None:
    adapter: TypeAdapter[object] = TypeAdapter(JobRequest)
    for kind in KINDS.values():
        body: dict[str, object] = {"kind": kind.name.value, "params": {}}
        if kind.requestable and all(not f.is_required() for f in kind.params.model_fields.values()):
            assert adapter.validate_python(body).params == kind.params()  # type: ignore[attr-defined]
        elif not kind.requestable:
            with pytest.raises(ValidationError):
                adapter.validate_python(body)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        kind_of("mine_bitcoin")
