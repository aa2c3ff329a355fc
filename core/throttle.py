"""Login throttling: failed password attempts counted per address and per user name.

Built on the `limits` package (moving windows): its memory storage for the embedded
default, Redis when one is configured, so that several API processes share the counts.
Only failures count; a throttled attempt is refused before the password is checked, so
guessing stops costing the server argon2 work too.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)


class LoginThrottle:
    def __init__(self, storage_uri: str, per_user: str, per_address: str) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self._per_user: RateLimitItem = parse(per_user)
        self._per_address: RateLimitItem = parse(per_address)

    def _keys(self, address: str, username: str) -> list[tuple[RateLimitItem, str]]:
        return [
            (self._per_address, f"address:{address}"),
            (self._per_user, f"user:{username.lower()}"),
        ]

    def retry_after(self, address: str, username: str) -> int | None:
        """Seconds until another attempt is allowed, or None when one is allowed now."""
        waits = []
        try:
            for item, key in self._keys(address, username):
                if not self._limiter.test(item, "login", key):
                    reset = self._limiter.get_window_stats(item, "login", key).reset_time
                    waits.append(max(1, math.ceil(reset - time.time())))
        except Exception:
            # Counts unreachable (Redis down): people can still log in; the password
            # hash's own cost still slows guessing.
            log.warning("login throttle storage unreachable; not throttling", exc_info=True)
        return max(waits) if waits else None

    def failed(self, address: str, username: str) -> None:
        try:
            for item, key in self._keys(address, username):
                self._limiter.hit(item, "login", key)
        except Exception:
            log.warning("login throttle storage unreachable; failure not counted")
