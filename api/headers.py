"""Security headers on every response, strictest on HTML pages.

Pages load scripts and styles from /static only: no inline script, handler or style is
allowed (tests/api/test_hardening.py scans the templates), so an injected
``<img onerror=...>`` in a class name or a harvested title cannot run. Downloads (images,
exports, model files) set their own Content-Type and keep nosniff.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
ALWAYS = {
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"x-frame-options": b"DENY",
}


class SecurityHeaders:
    """Pure ASGI middleware (no body buffering): adds headers a response has not set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = dict(ALWAYS)
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html"):
                    extra[b"content-security-policy"] = CSP.encode()
                headers.extend((n, v) for n, v in extra.items() if n not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
