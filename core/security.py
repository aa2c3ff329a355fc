"""Passwords (argon2), personal API tokens and signed session cookies."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer
from pwdlib import PasswordHash

SESSION_COOKIE = "winnow_session"
SESSION_MAX_AGE = 14 * 24 * 3600
TOKEN_PREFIX = "wn_"

_hasher = PasswordHash.recommended()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    return _hasher.verify(password, password_hash)


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    # Tokens are long random strings, so a plain SHA-256 is enough (no need for a slow hash).
    return hashlib.sha256(token.encode()).hexdigest()


class SessionSigner:
    """Signs the session cookie (user id) and derives the CSRF token from it."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._serializer = URLSafeTimedSerializer(secret, salt="winnow-session")

    def dumps(self, user_id: int, epoch: int = 0) -> str:
        # The epoch is the user's session generation: logging out moves it on, and every
        # cookie signed with an older one stops working (server-side logout).
        return self._serializer.dumps({"uid": user_id, "e": epoch, "n": secrets.token_hex(8)})

    def loads(self, cookie: str) -> tuple[int, int] | None:
        """(user id, session epoch) of a valid cookie, None for a forged or expired one."""
        try:
            data = self._serializer.loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        uid, epoch = data.get("uid"), data.get("e", 0)
        return (uid, epoch) if isinstance(uid, int) and isinstance(epoch, int) else None

    def csrf_token(self, cookie: str) -> str:
        return hmac.new(self._secret, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, cookie: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token(cookie), token)
