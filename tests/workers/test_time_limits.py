"""Every job kind has a time limit: a job past it ends failed and the worker goes on."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Stack
from tests.workers.test_jobs import LONG_TRAIN, _project_with_images


@pytest.fixture
def stack_env_overrides() -> dict[str, str]:
    # Train for at most 3 s instead of a day.
    return {"WINNOW_TIME_LIMITS": json.dumps({"train": 3})}


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_job_past_its_time_limit_ends_failed_and_the_next_job_runs(stack: Stack) -> None:
    pid = _project_with_images(stack)
    long = stack.client.post(
        f"/api/projects/{pid}/jobs", json={"kind": "train", "params": LONG_TRAIN}
    ).json()
    final = stack.wait_job(pid, long["id"], timeout=90)
    assert final["status"] == "failed"
    assert "time limit" in final["error"] and "Traceback" not in final["error"]
    assert stack.run_job(pid, "verify")["status"] == "succeeded"
