"""Users: authentication and the first admin."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.security import hash_password, verify_password
from core.tables import User

# Verifying against a fixed hash when the user does not exist keeps the response
# time the same, so timing does not tell which usernames exist.
_DUMMY_HASH = hash_password(secrets.token_hex(16))


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        verify_password(password, _DUMMY_HASH)
        return None
    # The password is checked for disabled accounts too: the answer takes the same time
    # as a wrong password, so timing does not tell which accounts are disabled.
    correct = verify_password(password, user.password_hash)
    return user if correct and user.is_active else None


def create_user(session: Session, username: str, password: str, is_admin: bool = False) -> User:
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def set_password(user: User, password: str) -> None:
    """A new password, and every session signed before it ends (as a logout does)."""
    user.password_hash = hash_password(password)
    user.session_epoch += 1


def active_admins(session: Session) -> int:
    query = select(func.count()).select_from(User)
    return session.scalar(query.where(User.is_admin.is_(True), User.is_active.is_(True))) or 0


def ensure_admin(session: Session, password: str) -> str | None:
    """Create user 'admin' when there are no users; return the password if it was generated."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    generated = None if password else secrets.token_urlsafe(12)
    create_user(session, "admin", password or generated or "", is_admin=True)
    return generated
