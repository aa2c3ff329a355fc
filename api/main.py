"""The FastAPI application: REST under /api, web pages under /, static files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from api.body_limits import BodyLimits
from api.deps import LoginRequired, has_credentials
from api.headers import SecurityHeaders
from api.request_metrics import Metrics, RequestMetrics
from api.routes import (
    auth,
    exports,
    images,
    jobs,
    model_versions,
    ops,
    projects,
    review,
    weights,
)
from core.config import Settings, get_settings
from core.db import make_engine, make_session_factory
from core.metrics import StateCollector
from core.schemas import Health
from core.security import SessionSigner
from core.store import image_store
from core.throttle import LoginThrottle
from web import model_pages, pages

VERSION = "0.1.0"
log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Winnow",
        version=VERSION,
        description="Build an image classifier from the web: harvest, verify, train, export.",
        docs_url=None,
        openapi_url="/api/openapi.json",
    )
    engine = make_engine(settings.db_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.signer = SessionSigner(settings.session_secret)
    app.state.store = image_store(settings)
    app.state.metrics = Metrics()
    app.state.metrics.registry.register(
        StateCollector(app.state.session_factory, settings.celery_broker)
    )
    app.state.throttle = LoginThrottle(
        settings.throttle_storage, settings.login_limit_per_user, settings.login_limit_per_address
    )

    @app.get("/api/health", response_model=Health, tags=["health"])
    def health(request: Request) -> Health:
        try:
            with request.app.state.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            # The driver's message names hosts and ports: the log gets it, anyone asking the type.
            log.warning("health check: database unavailable", exc_info=True)
            raise HTTPException(503, f"database unavailable ({type(exc).__name__})") from exc
        return Health(
            database=engine.url.get_backend_name(),
            broker=settings.celery_broker.split(":", 1)[0],
            version=VERSION,
        )

    for module in (auth, projects, images, review, jobs, model_versions, weights, exports):
        app.include_router(module.router, prefix="/api")

    @app.exception_handler(LoginRequired)
    def login_first(request: Request, _exc: LoginRequired) -> Response:
        # An htmx fragment (the jobs panel) must not swap a whole login page into itself.
        if request.headers.get("hx-request"):
            return Response(status_code=status.HTTP_401_UNAUTHORIZED)
        return RedirectResponse(f"/login?next={request.url.path}", status.HTTP_303_SEE_OTHER)

    @app.get("/api/docs", include_in_schema=False)
    def api_docs(request: Request) -> Response:
        # Swagger UI from web/static/swagger-ui (vendored): no CDN, so it works offline.
        return pages.TEMPLATES.TemplateResponse(
            request, "api_docs.html", {"openapi_url": app.openapi_url}
        )

    _document_sentence_details(app)
    app.include_router(ops.router)
    app.include_router(pages.router)
    app.include_router(model_pages.router)
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
    app.add_middleware(SecurityHeaders)

    async def authenticated(scope: Scope) -> bool:
        return await run_in_threadpool(has_credentials, Request(scope))

    app.add_middleware(BodyLimits, settings=settings, authenticated=authenticated)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app


def _document_sentence_details(app: FastAPI) -> None:
    """A 422 carries FastAPI's list of validation errors, or a sentence from a route that
    checks the request against the data (a class the project does not have, a file that is
    not an image). The schema says so, so that clients (and schemathesis) expect both."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            error = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
            if error is not None:
                listed = {k: v for k, v in error["properties"]["detail"].items() if k != "title"}
                error["properties"]["detail"] = {
                    "title": "Detail",
                    "anyOf": [listed, {"type": "string"}],
                }
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]
