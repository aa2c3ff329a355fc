"""Many people cleaning at once: relabel and review-page latency under concurrent load.

16 clients, each with its own API token, relabel distinct images (sending the version they
loaded) and read review pages of 100 tiles sorted by loss: 1,000 relabels and 200 pages in
all, on a project of 10,000 images with scores. Three servers, one after the other:

- Winnow on Postgres + Redis (the deployment shape): `winnow serve --no-worker --workers 2`.
- Winnow embedded: SQLite, `winnow serve --no-worker` (one process, as `serve` runs it).
- The anchor: a minimal FastAPI + SQLAlchemy app (bench/api_load_anchor.py), two processes
  on the same Postgres, served as Winnow is (a listening socket per process), doing the
  same read-check-update-insert transaction per relabel (primary-key read, version check,
  update, insert of an event row) and a page of 100 rows sorted by loss.

The rows are made directly with the core functions (no thumbnails: the REST mix never reads
them). Run from the repository root: ``.venv/bin/python bench/api_load.py``. The last line is
``RESULT api_load winnow=<relabel req/s> anchor=<req/s> unit=req/s ratio=<w/a> ...``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api_load_anchor import seed_anchor  # noqa: E402
from bench.api_load_mix import Stats, Target, pct, report, run_mix  # noqa: E402
from core.db import make_engine, make_session_factory, refresh_statistics, transaction  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.tables import (  # noqa: E402
    Image,
    ImageScore,
)
from tests.scored import scored_project  # noqa: E402
from tests.services import PostgresServer, RedisServer, free_port, wait_for_port  # noqa: E402

CLASSES = ["grizzly", "black", "teddy"]


def seed_winnow(db_url: str, images: int, clients: int) -> tuple[int, list[str]]:
    """A project of scored images and one editor with a token per client."""
    upgrade(db_url)
    engine = make_engine(db_url)
    rng = random.Random(0)
    with transaction(make_session_factory(engine)) as session:
        seeded = scored_project(
            session,
            CLASSES,
            images,
            loss=lambda _n: rng.expovariate(1.0),
            editors=[f"cleaner{n}" for n in range(clients)],
            predicted=lambda _n: rng.randrange(len(CLASSES)),
            probability=lambda _n: rng.random(),
            filename="image.jpg",
            width=320,
            height=240,
        )
        # As a rank job does after writing its scores; imports grow the images table
        # gradually, so autovacuum keeps its statistics.
        refresh_statistics(session, Image.__tablename__, ImageScore.__tablename__)
        project_id = seeded.project.id
        tokens = [seeded.tokens[f"cleaner{n}"] for n in range(clients)]
    engine.dispose()
    return project_id, tokens


def serve(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    wait_for_port(port, timeout=120, proc=proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def trees(server: subprocess.Popen[bytes], postgres: PostgresServer | None) -> dict[str, int]:
    """The process trees to clock: the server's, Postgres's (its postmaster) and the
    clients' (this process)."""
    found = {"server": server.pid, "clients": os.getpid()}
    if postgres is not None:
        found["postgres"] = int((postgres.data / "postmaster.pid").read_text().split()[0])
    return found


def winnow_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINNOW_")}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "WINNOW_DATA_DIR": str(data_dir),
        "WINNOW_SECRET_KEY": "bench-secret-key",
        **extra,
    }


def winnow_target(port: int, project_id: int, version: int = 1) -> Target:
    """Relabels that send ``version``, the version the clients' pages showed."""
    base = f"http://127.0.0.1:{port}/api/projects/{project_id}"
    return Target(
        base=base,
        relabel_path="/images/{id}",
        page_path="/images?sort=-loss&limit=100&offset={offset}",
        body=lambda n: {"version": version, "label": CLASSES[(n + version) % len(CLASSES)]},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--relabels", type=int, default=1_000)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="API processes on Postgres")
    parser.add_argument("--limit-s", type=float, default=90.0, help="time bound per server")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="the three servers in turn, this many times; the RESULT has the medians",
    )
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="winnow-api-load-"))
    postgres, redis = PostgresServer(), RedisServer()
    procs: list[subprocess.Popen[bytes]] = []
    names = ("winnow postgres", "winnow sqlite", "anchor postgres")
    runs: dict[str, list[Stats]] = {name: [] for name in names}
    try:
        mix = dict(relabels=args.relabels, pages=args.pages, limit_s=args.limit_s)
        pg_url = postgres.create_database()
        pg_project, tokens = seed_winnow(pg_url, args.images, args.clients)
        sqlite_dir = work / "sqlite"
        sqlite_dir.mkdir()
        sqlite_url = f"sqlite:///{sqlite_dir / 'winnow.db'}"
        lite_project, lite_tokens = seed_winnow(sqlite_url, args.images, args.clients)
        anchor_url = postgres.create_database()
        seed_anchor(anchor_url, args.images)
        ids = list(range(1, args.images + 1))
        random.Random(1).shuffle(ids)
        serve_argv = [sys.executable, "-m", "api.cli", "serve", "--no-worker", "--port"]

        def measure(
            name: str,
            argv: list[str],
            env: dict[str, str],
            port: int,
            target: Target,
            tokens: list[str],
            postgres: PostgresServer | None,
        ) -> None:
            """One server: start it, run the mix against it, stop it."""
            procs.append(serve(argv, env, port, work / f"{name.replace(' ', '-')}.log"))
            stats = run_mix(target, tokens, ids, **mix, trees=trees(procs[-1], postgres))
            stop(procs.pop())
            runs[name].append(stats)
            report(name, stats)

        for r in range(args.rounds):
            # Round r relabels the same images again, with the version the last round left.
            version = r + 1
            print(f"round {r + 1} of {args.rounds}", flush=True)
            port = free_port()
            measure(
                "winnow postgres",
                [*serve_argv, str(port), "--workers", str(args.workers)],
                winnow_env(work / "pg", WINNOW_DATABASE_URL=pg_url, WINNOW_BROKER_URL=redis.url()),
                port,
                winnow_target(port, pg_project, version),
                tokens,
                postgres,
            )
            # Embedded: SQLite, one process.
            port = free_port()
            measure(
                "winnow sqlite",
                [*serve_argv, str(port)],
                winnow_env(sqlite_dir, WINNOW_DATABASE_URL=sqlite_url),
                port,
                winnow_target(port, lite_project, version),
                lite_tokens,
                None,
            )
            # The anchor on the same Postgres.
            port = free_port()
            anchor_argv = [sys.executable, "-m", "bench.api_load_anchor", str(port)]
            measure(
                "anchor postgres",
                [*anchor_argv, str(args.workers)],
                {**os.environ, "PYTHONPATH": str(ROOT), "ANCHOR_DB": anchor_url},
                port,
                Target(
                    base=f"http://127.0.0.1:{port}",
                    relabel_path="/items/{id}",
                    page_path="/items?offset={offset}",
                    body=lambda n, v=version: {"version": v, "label": (n + v) % 3},
                ),
                tokens,
                postgres,
            )
    finally:
        for proc in procs:
            stop(proc)
        redis.stop()
        postgres.stop()
    print(f"load after: {os.getloadavg()}", flush=True)
    pg, lite, anchor = (runs[name] for name in names)
    # Each round's ratio pairs two servers that ran a minute apart, under the same load
    # from the rest of the machine: the median of those is steadier than a ratio of medians.
    ratios = [w.relabel_rate() / a.relabel_rate() for w, a in zip(pg, anchor, strict=True)]
    print("ratios by round: " + ", ".join(f"{q:.2f}" for q in ratios))
    errors = sum(len(stats.errors) for stats in (*pg, *lite, *anchor))
    print(
        f"RESULT api_load winnow={median(s.relabel_rate() for s in pg):.0f} "
        f"anchor={median(s.relabel_rate() for s in anchor):.0f} unit=req/s "
        f"ratio={median(ratios):.2f} "
        f"relabel_p99_ms={median(pct(s.relabel_ms, 0.99) for s in pg):.0f} "
        f"page_p50_ms={median(pct(s.page_ms, 0.5) for s in pg):.0f} "
        f"page_p99_ms={median(pct(s.page_ms, 0.99) for s in pg):.0f} "
        f"sqlite_relabel_p99_ms={median(pct(s.relabel_ms, 0.99) for s in lite):.0f} "
        f"anchor_relabel_p99_ms={median(pct(s.relabel_ms, 0.99) for s in anchor):.0f} "
        f"errors={errors} rounds={args.rounds}"
    )


if __name__ == "__main__":
    main()
