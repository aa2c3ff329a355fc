"""Thin, named tasks: each takes a job id and hands the work to the runner."""

from __future__ import annotations

from workers.app import app
from workers.runner import run_job


@app.task(name="winnow.import_zip")
def import_zip(job_id: int) -> str:
    from workers.imports import import_zip_job

    return run_job(job_id, import_zip_job)


@app.task(name="winnow.import_urls")
def import_urls(job_id: int) -> str:
    from workers.harvest.urllist import import_urls_job

    return run_job(job_id, import_urls_job)


@app.task(name="winnow.harvest")
def harvest(job_id: int) -> str:
    from workers.harvest.job import harvest_job

    return run_job(job_id, harvest_job)


@app.task(name="winnow.verify")
def verify(job_id: int) -> str:
    from workers.verify import verify_job

    return run_job(job_id, verify_job)


@app.task(name="winnow.train")
def train(job_id: int) -> str:
    from workers.train import train_job

    return run_job(job_id, train_job)


@app.task(name="winnow.lr_find")
def lr_find(job_id: int) -> str:
    from workers.train import lr_find_job

    return run_job(job_id, lr_find_job)


@app.task(name="winnow.rank")
def rank(job_id: int) -> str:
    from workers.rank import rank_job

    return run_job(job_id, rank_job)
