"""The one registry of job kinds.

Each kind names, once, its parameters model, its Celery task and queue, the job function a
worker runs, its time limit and how the pages speak of it. The job request schema of
POST /jobs, the API's enqueue, the workers' task table and the project page's forms are all
derived from this table; tests/test_kinds.py fails when a kind lacks a part.

The job functions are named by import path, not imported: core (and so the API) never
loads the workers' heavy modules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, create_model

from core.params import (
    HarvestParams,
    ImportUrlsParams,
    ImportZipParams,
    JobParams,
    LrFindParams,
    RankParams,
    TrainParams,
    VerifyParams,
)


class JobKindName(enum.StrEnum):
    import_zip = "import_zip"
    import_urls = "import_urls"
    harvest = "harvest"
    verify = "verify"
    train = "train"
    lr_find = "lr_find"
    rank = "rank"


class QueueName(enum.StrEnum):
    """Celery queues: one per kind of worker machine (see docker-compose.yml)."""

    cpu = "cpu"  # decoding, imports
    browser = "browser"  # Chromium
    gpu = "gpu"  # training and ranking


@dataclass(frozen=True)
class JobKind:
    name: JobKindName
    params: type[JobParams]
    task: str
    queue: QueueName
    function: str  # "module:function" of the job function a worker runs
    title: str  # the button and heading that start it
    progress: str  # what the job's done/total count, as "120/400 images"
    time_limit: int  # seconds before the worker stops the task (it then ends failed)
    # Params shown as fields of the project page's form; () for kinds started by an upload.
    form: tuple[str, ...] = ()
    # Whether POST /jobs takes it; import_zip comes through its upload route only.
    requestable: bool = True


HOUR = 3600

KINDS: dict[JobKindName, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind(
            JobKindName.import_zip,
            ImportZipParams,
            "winnow.import_zip",
            QueueName.cpu,
            "workers.imports:import_zip_job",
            "Import zip",
            "files",
            time_limit=6 * HOUR,
            requestable=False,
        ),
        JobKind(
            JobKindName.import_urls,
            ImportUrlsParams,
            "winnow.import_urls",
            QueueName.cpu,
            "workers.harvest.urllist:import_urls_job",
            "Import URLs",
            "URLs",
            time_limit=6 * HOUR,
        ),
        JobKind(
            JobKindName.harvest,
            HarvestParams,
            "winnow.harvest",
            QueueName.browser,
            "workers.harvest.job:harvest_job",
            "Harvest",
            "images",
            time_limit=6 * HOUR,
            form=("engines", "max_per_class", "min_width", "min_height"),
        ),
        JobKind(
            JobKindName.verify,
            VerifyParams,
            "winnow.verify",
            QueueName.cpu,
            "workers.verify.job:verify_job",
            "Verify",
            "images",
            time_limit=6 * HOUR,
            form=("recheck",),
        ),
        JobKind(
            JobKindName.lr_find,
            LrFindParams,
            "winnow.lr_find",
            QueueName.gpu,
            "workers.train:lr_find_job",
            "Find learning rate",
            "steps",
            time_limit=2 * HOUR,
            form=("arch", "pretrained", "image_size"),
        ),
        JobKind(
            JobKindName.train,
            TrainParams,
            "winnow.train",
            QueueName.gpu,
            "workers.train:train_job",
            "Train",
            "steps",
            time_limit=24 * HOUR,
            form=("arch", "pretrained", "epochs", "image_size", "lr"),
        ),
        JobKind(
            JobKindName.rank,
            RankParams,
            "winnow.rank",
            QueueName.gpu,
            "workers.rank:rank_job",
            "Rank by loss",
            "images",
            time_limit=24 * HOUR,
            form=("out_of_fold", "out_of_fold_method", "folds", "rounds"),
        ),
    )
}


def kind_of(name: str) -> JobKind:
    """The registered kind of a name; ValueError for a name that is none."""
    return KINDS[JobKindName(name)]


def _request_model(kind: JobKind) -> type[Any]:
    # One model per kind: {"kind": "<name>", "params": {...}}, named as before (HarvestJob).
    name = "".join(part.title() for part in kind.name.value.split("_")) + "Job"
    tag: Any = Literal[kind.name.value]
    params: Any = (
        (kind.params, Field(default_factory=kind.params))
        if _has_defaults(kind.params)
        else (kind.params, ...)
    )
    return create_model(name, __base__=JobParams, kind=(tag, ...), params=params)


def _has_defaults(model: type[JobParams]) -> bool:
    return all(not field.is_required() for field in model.model_fields.values())


_REQUESTS = tuple(_request_model(k) for k in KINDS.values() if k.requestable)

if TYPE_CHECKING:
    JobRequest = Any
else:
    # The body of POST /projects/{id}/jobs: a union of the requestable kinds by "kind".
    JobRequest = Annotated[Union[_REQUESTS], Field(discriminator="kind")]  # noqa: UP007
