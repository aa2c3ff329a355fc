"""Request-size limits, enforced while the body streams and before authentication.

FastAPI parses a form body before it runs the route's dependencies, so without this an
anonymous client could make the server spool a 4 GB "upload" to disk before hearing 401.
Each route kind has its cap (JSON and forms, uploads, zip imports); a request without
valid credentials gets only the small anonymous cap, enough for a login. A declared
Content-Length over the cap is refused at once; a body that streams past it is cut off
with 413 as soon as it does.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings

ZIP_ROUTE = re.compile(r"^/api/projects/\d+/imports/zip$")
UPLOAD_ROUTE = re.compile(r"^/api/projects/\d+/(imports/(images|urls)|weights|models/\d+/predict)$")
WITH_BODY = {"POST", "PUT", "PATCH"}

Authenticated = Callable[[Scope], Awaitable[bool]]


def route_cap(path: str, settings: Settings) -> int:
    if ZIP_ROUTE.match(path):
        return settings.max_zip_upload_bytes
    if UPLOAD_ROUTE.match(path):
        return settings.max_upload_bytes
    return settings.max_body_bytes


class BodyTooLarge(HTTPException):
    def __init__(self, cap: int) -> None:
        super().__init__(413, f"the request body is over {cap} bytes")


class BodyLimits:
    def __init__(self, app: ASGIApp, settings: Settings, authenticated: Authenticated) -> None:
        self.app, self.settings, self.authenticated = app, settings, authenticated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        cap = route_cap(scope["path"], self.settings)
        anonymous = self.settings.max_anonymous_bytes
        declared = _content_length(scope)
        if (declared is None or declared > anonymous) and not await self.authenticated(scope):
            cap = min(cap, anonymous)
        if declared is not None and declared > cap:
            await JSONResponse({"detail": str(BodyTooLarge(cap).detail)}, 413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    # FastAPI passes an HTTPException raised while it reads the body on
                    # as it is: the client hears 413, and the parser stops writing.
                    raise BodyTooLarge(cap)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
