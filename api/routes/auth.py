"""Log in and out, users, personal API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import (
    AdminUser,
    CurrentUser,
    DbSession,
    RowId,
    optional_user,
    password_login,
    start_session,
)
from core import users
from core.columns import utcnow
from core.schemas import (
    LoginIn,
    TokenCreated,
    TokenIn,
    TokenLogin,
    TokenOut,
    UserIn,
    UserOut,
    UserPatch,
)
from core.security import (
    SESSION_COOKIE,
    new_api_token,
    token_digest,
)
from core.tables import ApiToken, User

router = APIRouter(tags=["auth"])


@router.post("/auth/login", response_model=UserOut)
def login(body: LoginIn, request: Request, response: Response, session: DbSession) -> User:
    """Check the password and set the session cookie (for the browser and for curl -c).
    Failed attempts are throttled per address and user name (429 with Retry-After)."""
    user = password_login(request, session, body.username, body.password)
    start_session(request, response, user)
    return user


@router.post("/auth/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def token_for_password(body: TokenLogin, request: Request, session: DbSession) -> TokenCreated:
    """Make a personal API token from a username and password (for scripts and curl)."""
    user = password_login(request, session, body.username, body.password)
    return _new_token(session, user, body.name, body.expires_in_days)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(response: Response, user: Annotated[User | None, Depends(optional_user)]) -> None:
    """End the session: every session cookie of the user stops working, not only this one."""
    if user is not None:
        user.session_epoch += 1
    response.delete_cookie(SESSION_COOKIE)


@router.get("/users/me", response_model=UserOut)
def me(user: CurrentUser) -> User:
    return user


@router.get("/users", response_model=list[UserOut])
def list_users(session: DbSession, _admin: AdminUser) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(body: UserIn, session: DbSession, _admin: AdminUser) -> User:
    try:
        return users.create_user(session, body.username, body.password, body.is_admin)
    except IntegrityError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"user {body.username!r} exists") from exc


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(body: UserPatch, user_id: RowId, session: DbSession, admin: AdminUser) -> User:
    """Disable or enable an account, make or unmake an admin, reset a password."""
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {user_id} not found")
    demoted = body.is_admin is False or body.is_active is False
    if demoted and user.id == admin.id:
        raise HTTPException(status.HTTP_409_CONFLICT, "an admin cannot disable or demote themself")
    if body.is_active is not None:
        user.is_active = body.is_active
    if body.is_admin is not None:
        user.is_admin = body.is_admin
    if body.password is not None:
        users.set_password(user, body.password)
    session.flush()
    if users.active_admins(session) == 0:
        raise HTTPException(status.HTTP_409_CONFLICT, "at least one active admin must remain")
    return user


@router.get("/users/me/tokens", response_model=list[TokenOut])
def list_tokens(session: DbSession, user: CurrentUser) -> list[ApiToken]:
    return list(
        session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
    )


@router.post("/users/me/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(body: TokenIn, session: DbSession, user: CurrentUser) -> TokenCreated:
    return _new_token(session, user, body.name, body.expires_in_days)


def _new_token(session: Session, user: User, name: str, days: int | None) -> TokenCreated:
    token = new_api_token()
    expires = utcnow() + timedelta(days=days) if days else None
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=token_digest(token),
        prefix=token[:10],
        expires_at=expires,
    )
    session.add(row)
    session.flush()
    return TokenCreated(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=None,
        expires_at=row.expires_at,
        token=token,
    )


@router.delete("/users/me/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: RowId, session: DbSession, user: CurrentUser) -> None:
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"token {token_id} not found")
    session.delete(row)
