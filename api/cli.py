"""The `winnow` command: serve, worker, migrate, createuser, demo."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from core.config import Settings, get_settings
from core.db import make_engine, make_session_factory, transaction


def _migrate(settings: Settings) -> None:
    from core.migrate import upgrade

    upgrade(settings.db_url)


def cmd_migrate(_args: argparse.Namespace) -> int:
    settings = get_settings()
    _migrate(settings)
    print(f"database at head: {make_engine(settings.db_url).url!r}")
    if settings.store_url:
        from core.s3store import s3_store

        made = s3_store(settings).ensure_bucket()
        print(f"store {'made' if made else 'ready'}: {settings.store_url}")
    return 0


def node_name(queues: str) -> str:
    """The worker's Celery node name: its queues at its host, e.g. gpu+browser@trainbox
    (%h is Celery's), unique per role and host, and written on each job it claims."""
    return "+".join(q.strip() for q in queues.split(",") if q.strip()) + "@%h"


def worker_argv(
    queues: str, concurrency: int, pool: str, loglevel: str, name: str | None = None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--loglevel",
        loglevel,
        "--hostname",
        name or node_name(queues),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    argv = worker_argv(args.queues, args.concurrency, args.pool, args.loglevel, args.name)
    os.execv(sys.executable, argv)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api import processes
    from core.users import ensure_admin

    settings = get_settings()
    _migrate(settings)
    factory = make_session_factory(make_engine(settings.db_url))
    with transaction(factory) as session:
        generated = ensure_admin(session, settings.admin_password)
    if generated:
        print(f"Created user 'admin' with password: {generated}  (shown once)", flush=True)
    worker = None
    if not args.no_worker:
        worker = subprocess.Popen(
            worker_argv("cpu,browser,gpu", settings.worker_concurrency, "prefork", "INFO"),
            # Run in the child before exec; this process has no threads yet.
            preexec_fn=processes.die_with_parent,
        )
    # uvicorn stops on SIGTERM, then raises the signal again: with the default handler the
    # process would end there, before the worker is stopped. This handler ends it with an
    # exception instead, so the worker is always stopped first.
    signal.signal(signal.SIGTERM, _stop_serving)
    options: dict[str, Any] = {
        "app": "api.main:create_app",
        "factory": True,
        "host": args.host or settings.host,
        "port": args.port or settings.port,
        "log_level": "info",
        "log_config": _log_config(settings),
    }
    code = 0
    try:
        # Sync routes share one GIL per process: more processes use more cores. They must
        # share WINNOW_SECRET_KEY (or the data directory's generated key).
        if args.workers == 1:
            code = processes.serve_one(uvicorn.Config(**options))
        elif processes.supported():
            uvicorn.Config(**options)  # logging, as each process has it
            code = processes.serve_processes(args.workers, options)
        else:
            uvicorn.run(**options, workers=args.workers)
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        if worker is not None:
            _stop_worker(worker)
    return code


def _log_config(settings: Settings) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    if settings.log_format == "json":
        from core.logs import json_log_config

        return json_log_config(LOGGING_CONFIG)
    return LOGGING_CONFIG


class _Stopped(Exception):
    """SIGTERM arrived: stop serving and stop the worker."""


def _stop_serving(_signum: int, _frame: object) -> None:
    raise _Stopped


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (running tasks finish), at most 30 s, then the worker and its pool."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def cmd_createuser(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from core.users import create_user

    settings = get_settings()
    password = os.environ.get("WINNOW_NEW_PASSWORD") or getpass.getpass("Password: ")
    if len(password) < 8:
        print("use at least 8 characters", file=sys.stderr)
        return 2
    factory = make_session_factory(make_engine(settings.db_url))
    try:
        with transaction(factory) as session:
            user = create_user(session, args.username, password, is_admin=args.admin)
    except IntegrityError:
        print(f"user {args.username!r} exists", file=sys.stderr)
        return 1
    print(f"created user {user.username!r} (id {user.id}{', admin' if args.admin else ''})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from core.demo import create_demo_project, write_demo_zip

    if args.zip:
        with open(args.zip, "wb") as target:
            count = write_demo_zip(target, per_class=args.per_class)
        print(f"wrote {count} digit images in ImageFolder layout to {args.zip}")
        return 0
    settings = get_settings()
    _migrate(settings)
    factory = make_session_factory(make_engine(settings.db_url))
    with transaction(factory) as session:
        project_id, count = create_demo_project(
            session, settings, args.user, per_class=args.per_class
        )
    print(f"created project {project_id} with {count} digit images in 10 classes")
    print('next: verify it (POST /api/projects/{id}/jobs {"kind": "verify"}), then train')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API and one worker (embedded default)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--no-worker", action="store_true", help="run the API alone")
    serve.add_argument(
        "--workers", type=int, default=1, help="API processes (several for Postgres deployments)"
    )
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("-Q", "--queues", default="cpu,browser,gpu")
    worker.add_argument("-c", "--concurrency", type=int, default=1)
    worker.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "-n", "--name", default=None, help="Celery node name (default: <queues>@<host>)"
    )
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="upgrade the database to the latest schema")
    migrate.set_defaults(func=cmd_migrate)

    createuser = sub.add_parser(
        "createuser", help="create a user (password from WINNOW_NEW_PASSWORD or a prompt)"
    )
    createuser.add_argument("username")
    createuser.add_argument("--admin", action="store_true")
    createuser.set_defaults(func=cmd_createuser)

    demo = sub.add_parser("demo", help="create a project of handwritten digits (no internet)")
    demo.add_argument("--user", default="admin", help="owner of the project")
    demo.add_argument("--per-class", type=int, default=60)
    demo.add_argument(
        "--zip", metavar="PATH", help="write the images as an ImageFolder zip instead"
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
