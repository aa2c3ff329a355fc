"""Project isolation, route by route, generated from the OpenAPI schema.

Every route that takes a project is called as a user who is not a member, with another
project's ids; then as a member of a project of their own with parameters that name the
other project's things (its model, classes, weights file, images, events, jobs). Each call
is refused with 403 or 404, nothing changes, and nothing of the other project appears in
any answer. A viewer's writes are refused with 403. A new route is covered without anyone
remembering to add it: the list comes from the schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save_file
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from core.config import Settings
from core.db import transaction
from core.ingest import Provenance, add_image
from core.kinds import KINDS
from core.labels import Change, apply_change
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.store import image_store
from core.tables import (
    ApiToken,
    Image,
    ImageState,
    Job,
    JobStatus,
    LabelAction,
    LabelEvent,
    ModelVersion,
    ProjectMember,
    Role,
)
from core.team_tables import ReviewLease, SecondOpinion
from core.users import create_user
from core.weights import weights_key
from tests.conftest import migrated
from tests.imagegen import picture
from web.pages import router as pages_router

SECRET = "Secret-Grizzlies"
WRITE = {"post", "put", "patch", "delete"}
# Parameter -> which of project A's objects fills it.
IDS = (
    "project_id",
    "image_id",
    "job_id",
    "model_id",
    "event_id",
    "token_id",
    "opinion_id",
    "other_id",
)


@dataclass
class World:
    client: TestClient
    factory: sessionmaker[Session]
    a: dict[str, Any]  # ids and names of project A (the victim)
    b: dict[str, Any]  # project B of the outsider
    tokens: dict[str, str]
    data_dir: Path


def _seed(
    factory: sessionmaker[Session], settings: Settings, owner: str, name: str
) -> dict[str, Any]:
    data_dir = settings.data_dir
    store = image_store(settings)
    with transaction(factory) as s:
        user = create_user(s, owner, f"{owner}-password")
        project = create_project(
            s,
            ProjectIn(
                name=name, classes=[ClassIn(name=f"{name}-one"), ClassIn(name=f"{name}-two")]
            ),
            user.id,
        )
        data = picture("red", len(name))
        image, _ = add_image(s, store, project.id, data, project.classes[0].id, Provenance())
        store.put(data, "normal", sha256=image.sha256)
        store.put(data, "thumb", sha256=image.sha256)
        image.state = ImageState.ok
        s.flush()
        event_id = apply_change(s, image, Change(LabelAction.keep), user.id)
        job = Job(project_id=project.id, kind="verify", params={}, status=JobStatus.succeeded)
        s.add(job)
        s.flush()
        folder = data_dir / "models" / name
        folder.mkdir(parents=True)
        for kind in ("onnx", "metadata", "weights"):
            (folder / kind).write_text(f"{name} {kind}")
        (folder / "cam.png").write_bytes(b"\x89PNG " + name.encode())
        version = ModelVersion(
            project_id=project.id,
            arch="resnet18",
            classes=[c.name for c in project.classes],
            files={k: f"models/{name}/{k}" for k in ("onnx", "metadata", "weights")},
            interpretation={
                "top_losses": [
                    {
                        "image_id": image.id,
                        "gradcam": f"models/{name}/cam.png",
                        "actual": project.classes[0].name,
                        "predicted": project.classes[1].name,
                        "probability": 0.9,
                        "loss": 2.3,
                    }
                ]
            },
        )
        s.add(version)
        token = ApiToken(user_id=user.id, name="t", token_hash=name * 4, prefix="wn_")
        s.add(token)
        opinion = SecondOpinion(
            project_id=project.id,
            image_id=image.id,
            event_id=event_id,
            first_user_id=user.id,
            first_label_id=image.label_id,
        )
        s.add(opinion)
        s.flush()
        project_id = project.id
        out: dict[str, Any] = {
            "project_id": project_id,
            "image_id": image.id,
            "job_id": job.id,
            "model_id": version.id,
            "event_id": event_id,
            "token_id": token.id,
            "opinion_id": opinion.id,
            "other_id": version.id,
            "class_ids": [c.id for c in project.classes],
            "sha": image.sha256,
            "name": name,
            "user": owner,
        }
    wfile = image_store(settings).staging(weights_key(project_id, f"{owner}-body.safetensors"))
    save_file({"w": np.zeros(2, np.float32)}, str(wfile))
    out["weights"] = f"{owner}-body.safetensors"
    return out


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings, factory = migrated(tmp_path, "k")
    a = _seed(factory, settings, "alice", SECRET)
    b = _seed(factory, settings, "bob", "bobs-bears")
    with transaction(factory) as s:
        viewer = create_user(s, "vic", "vic-password")
        s.add(ProjectMember(project_id=a["project_id"], user_id=viewer.id, role=Role.viewer))
    with TestClient(create_app(settings)) as client:
        tokens = {}
        for user in ("alice", "bob", "vic"):
            login = {"username": user, "password": f"{user}-password", "name": "t"}
            tokens[user] = client.post("/api/auth/tokens", json=login).json()["token"]
        yield World(client, factory, a, b, tokens, settings.data_dir)


def _routes(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    schema = client.get("/api/openapi.json").json()
    return [
        (method, path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if "{project_id}" in path
    ]


def _fill(path: str, ids: dict[str, Any], override: dict[str, Any] | None = None) -> str:
    values = {
        **{k: ids[k] for k in IDS},
        "kind": "onnx",
        "username": ids["user"],
        **(override or {}),
    }
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def _call(world: World, user: str, method: str, url: str, op: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {world.tokens[user]}"}
    body = op.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in body:
        single = "zip" in url or "weights" in url
        if single:
            return world.client.request(
                method, url, headers=headers, files={"file": ("x.bin", b"\0" * 16)}
            )
        image = [("files", ("x.jpg", picture("blue", 1), "image/jpeg"))]
        return world.client.request(method, url, headers=headers, files=image)
    if "application/json" in body:
        return world.client.request(method, url, headers=headers, json=_json_body(url, world))
    return world.client.request(method, url, headers=headers)


def _json_body(url: str, world: World) -> dict[str, Any]:
    a = world.a
    if url.endswith("/jobs"):
        return {"kind": "rank", "params": {"model_version_id": a["model_id"]}}
    if url.endswith("/bulk"):
        return {"action": "delete", "images": [{"id": a["image_id"], "version": 2}]}
    if url.endswith("/members"):
        return {"username": "bob", "role": "owner"}
    if url.endswith("/classes"):
        return {"name": "intruder"}
    if url.endswith("/review/batch"):
        return {"size": 5}
    if url.endswith("/review/opinions"):
        return {"image_ids": [a["image_id"]]}
    if url.endswith("/answer"):
        return {"delete": True}
    if re.search(r"/images/\d+$", url):
        return {"version": 2, "action": "delete"}
    return {"name": "renamed"}


def _snapshot(world: World) -> tuple[Any, ...]:
    """Project A's rows, and every file of the data directory (but the database's own):
    a refused upload must not have left anything on disk either."""
    project_id = world.a["project_id"]
    files = sorted(
        (str(path.relative_to(world.data_dir)), path.stat().st_size)
        for path in world.data_dir.rglob("*")
        if path.is_file() and not path.name.startswith("winnow.sqlite")
    )
    with transaction(world.factory) as s:
        images = s.execute(
            select(Image.id, Image.state, Image.label_id, Image.version)
            .where(Image.project_id == project_id)
            .order_by(Image.id)
        ).all()
        counts = tuple(
            s.scalar(select(func.count()).select_from(t).where(t.project_id == project_id))
            for t in (LabelEvent, Job, ModelVersion, ProjectMember, SecondOpinion, ReviewLease)
        )
        return (tuple(images), counts, tuple(files))


def _leaks(text: str, a: dict[str, Any]) -> list[str]:
    return [v for v in (a["name"], a["sha"][:16], f"{a['name']}-one") if v in text]


def test_an_outsider_gets_nothing_of_another_project_on_any_route(world: World) -> None:
    before = _snapshot(world)
    routes = _routes(world.client)
    assert len(routes) > 25
    for method, path, op in routes:
        url = _fill(path, world.a)
        response = _call(world, "bob", method, url, op)
        assert response.status_code in (403, 404), (method, url, response.status_code)
        assert not _leaks(response.text, world.a), (method, url, response.text)
    assert _snapshot(world) == before


def test_ids_of_another_project_inside_ones_own_project_are_refused(world: World) -> None:
    before = _snapshot(world)
    a, b = world.a, world.b
    for method, path, op in _routes(world.client):
        if not any(f"{{{k}}}" in path for k in IDS[1:]):
            continue
        # Bob's own project, with Alice's image, job, model, event ids.
        url = _fill(path, {**a, "project_id": b["project_id"], "user": "nobody"})
        response = _call(world, "bob", method, url, op)
        assert response.status_code in (403, 404), (method, url, response.status_code)
        assert not _leaks(response.text, a), (method, url, response.text)
    own_jobs = f"/api/projects/{b['project_id']}/jobs"
    auth = {"Authorization": f"Bearer {world.tokens['bob']}"}
    refused = [
        {"kind": "rank", "params": {"model_version_id": a["model_id"]}},
        {"kind": "harvest", "params": {"class_ids": a["class_ids"]}},
        {"kind": "train", "params": {"weights_file": a["weights"]}},
        {"kind": "lr_find", "params": {"weights_file": a["weights"]}},
    ]
    for body in refused:
        response = world.client.post(own_jobs, json=body, headers=auth)
        assert response.status_code == 404, (body, response.text)
        assert not _leaks(response.text, a)
    for path in ("models/1/weights", "../1/weights/x.safetensors", f"/abs/{a['weights']}"):
        body = {"kind": "train", "params": {"weights_file": path}}
        assert world.client.post(own_jobs, json=body, headers=auth).status_code == 422
    # Kinds only the server makes (a zip import names its upload by path) cannot be requested.
    foreign_file = f"projects/{a['project_id']}/weights/{a['weights']}"
    for kind in (name for name, k in KINDS.items() if not k.requestable):
        body = {"kind": str(kind), "params": {"upload": foreign_file}}
        assert world.client.post(own_jobs, json=body, headers=auth).status_code == 422, kind
    with transaction(world.factory) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.project_id == b["project_id"], Job.status == JobStatus.queued)
            )
            == 0
        )
    assert _snapshot(world) == before


def test_a_viewer_cannot_write(world: World) -> None:
    before = _snapshot(world)
    for method, path, op in _routes(world.client):
        if method not in WRITE or path.endswith("/predict"):
            continue
        url = _fill(path, world.a)
        response = _call(world, "vic", method, url, op)
        assert response.status_code == 403, (method, url, response.status_code, response.text)
    assert _snapshot(world) == before


def test_an_outsider_gets_no_page_of_another_project(world: World) -> None:
    """The web pages are not in the OpenAPI schema: their routes are read from the router."""
    paths = [getattr(route, "path", "") for route in pages_router.routes]
    pages = [path for path in paths if "{project_id}" in path]
    assert len(pages) >= 7
    auth = {"Authorization": f"Bearer {world.tokens['bob']}"}
    a, b = world.a, world.b
    for path in pages:
        for ids in (a, {**a, "project_id": b["project_id"]}):
            response = world.client.get(_fill(path, ids), headers=auth, follow_redirects=False)
            if ids is not a and "{model_id}" not in path:
                # Bob's own project's pages exist; they must still hold nothing of Alice's.
                assert response.status_code == 200, (path, response.status_code)
            else:
                assert response.status_code == 404, (path, ids["project_id"], response.text)
            assert not _leaks(response.text, a), (path, response.text)


def test_every_page_of_a_project_renders_for_its_owner_under_the_strict_policy(
    world: World,
) -> None:
    """The same page routes, as the owner: each answers with the page and its CSP."""
    auth = {"Authorization": f"Bearer {world.tokens['alice']}"}
    paths = {getattr(route, "path", "") for route in pages_router.routes}
    for path in sorted({p for p in paths if "{" in p} | {"/", "/tokens", "/login"}):
        response = world.client.get(_fill(path, world.a), headers=auth)
        assert response.status_code == 200, (path, response.text[-500:])
        csp = response.headers["content-security-policy"]
        assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp, path
