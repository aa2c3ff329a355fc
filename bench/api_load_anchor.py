"""The anchor of bench/api_load.py: a minimal FastAPI + SQLAlchemy app on the same Postgres,
doing per relabel what Winnow does (read, version check, update, event insert) and a sorted
page of 100 rows per read. Served as `winnow serve --workers N` serves Winnow, N uvicorn
processes each on a socket of its own (api/processes.py), so that the two differ in what
the app does per request and not in how connections reach it:
``python -m bench.api_load_anchor PORT WORKERS`` with ANCHOR_DB set."""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from pydantic import BaseModel

ANCHOR_SCHEMA = """
CREATE TABLE items (id serial PRIMARY KEY, label integer NOT NULL, version integer NOT NULL,
                    loss double precision NOT NULL);
CREATE INDEX items_loss ON items (loss);
CREATE TABLE events (id serial PRIMARY KEY, item_id integer NOT NULL REFERENCES items(id),
                     old_label integer, new_label integer, created_at timestamptz DEFAULT now());
"""


def seed_anchor(db_url: str, images: int) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    rng = random.Random(0)
    with engine.begin() as conn:
        for stmt in ANCHOR_SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(text(stmt))
        conn.execute(
            text("INSERT INTO items (label, version, loss) VALUES (:l, 1, :s)"),
            [{"l": i % 3, "s": rng.expovariate(1.0)} for i in range(images)],
        )
    engine.dispose()


def anchor_app() -> Any:
    """The minimal app: one transaction per relabel, a sorted page of 100 rows per read."""
    from fastapi import FastAPI, HTTPException
    from sqlalchemy import create_engine, text

    engine = create_engine(os.environ["ANCHOR_DB"], pool_size=20, max_overflow=20)
    app = FastAPI()

    @app.patch("/items/{item_id}")
    def relabel(item_id: int, body: Patch) -> dict[str, int]:
        with engine.begin() as conn:
            row = conn.execute(
                text("SELECT label, version FROM items WHERE id = :i"), {"i": item_id}
            ).one()
            if row.version != body.version:
                raise HTTPException(409, "stale")
            conn.execute(
                text("UPDATE items SET label = :l, version = version + 1 WHERE id = :i"),
                {"l": body.label, "i": item_id},
            )
            conn.execute(
                text("INSERT INTO events (item_id, old_label, new_label) VALUES (:i, :o, :n)"),
                {"i": item_id, "o": row.label, "n": body.label},
            )
        return {"id": item_id, "version": body.version + 1}

    @app.get("/items")
    def page(offset: int = 0) -> list[dict[str, Any]]:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT * FROM items ORDER BY loss DESC, id LIMIT 100 OFFSET :o"),
                {"o": offset},
            )
            return [dict(r._mapping) for r in rows]

    return app


class Patch(BaseModel):
    """The anchor's relabel body."""

    version: int
    label: int


if __name__ == "__main__":
    from api.processes import serve_processes

    port, workers = int(sys.argv[1]), int(sys.argv[2])
    app = "bench.api_load_anchor:anchor_app"
    options = {"app": app, "factory": True, "host": "127.0.0.1", "port": port}
    raise SystemExit(serve_processes(workers, {**options, "log_level": "warning"}))
