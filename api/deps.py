"""Request dependencies: settings, database session, caller, project membership."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, HTTPException, Path, Request, Response, status
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.columns import aware, utcnow
from core.config import Settings
from core.db import transaction
from core.security import SESSION_COOKIE, SESSION_MAX_AGE, SessionSigner, token_digest
from core.store import ImageStore
from core.tables import ApiToken, ModelVersion, Project, ProjectMember, Role, User
from core.throttle import LoginThrottle
from core.users import authenticate

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

# The largest id a row can have (BIGINT, SQLite's INTEGER): larger ones are a 422, not a
# driver overflow deep in a query.
MAX_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in
# its thread pool, and under load each hop to a thread and back waits its turn for the
# interpreter lock. Those that query the database stay ``def``.


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_store(request: Request) -> ImageStore:
    store: ImageStore = request.app.state.store
    return store


StoreDep = Annotated[ImageStore, Depends(get_store)]


def start_session(request: Request, response: Response, user: User) -> None:
    """Set the signed session cookie of a user who has just proved their password."""
    signer: SessionSigner = request.app.state.signer
    response.set_cookie(
        SESSION_COOKIE,
        signer.dumps(user.id, user.session_epoch),
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed when the handler returns normally.

    Making a session does no I/O, so it happens on the event loop; the commit (or the
    rollback) and the close go to the thread pool, once. As a ``def`` generator this cost
    two hops to the pool per request, and under load each hop waits for the interpreter
    lock. The routes and dependencies that use the session run one at a time, in the pool."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_end, session, False)
        raise
    if not session.in_transaction():
        # The route committed in its own thread (the hot paths do: api/in_route.py): closing
        # a session without a transaction does no I/O.
        session.close()
        return
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(_end, session, True)


def _end(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function": the commit happens when the route returns, before the response is sent,
# so a client that heard 200 never reads the state from before its change.
DbSession = Annotated[Session, Depends(get_session, scope="function")]


# The statements every request runs are built once (building one costs more than running
# it). The token with its user, and the project with the caller's membership: one each.
# A token's columns rather than the mapped object: a request reads them, and writes
# last_used_at once a minute at most.
_TOKEN = (ApiToken.id, ApiToken.expires_at, ApiToken.last_used_at)
_TOKEN_AND_USER = (
    select(*_TOKEN, User)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("digest"))
)
_PROJECT_AND_MEMBER = (
    select(Project, ProjectMember.role)
    .outerjoin(
        ProjectMember,
        (ProjectMember.project_id == Project.id) & (ProjectMember.user_id == bindparam("user_id")),
    )
    .where(Project.id == bindparam("project_id"))
)


# A project route called with a token: who is asking and their membership, in one.
_TOKEN_USER_AND_PROJECT = (
    select(*_TOKEN, User, Project, ProjectMember.role)
    .join(User, User.id == ApiToken.user_id)
    .outerjoin(Project, Project.id == bindparam("project_id"))
    .outerjoin(
        ProjectMember, (ProjectMember.project_id == Project.id) & (ProjectMember.user_id == User.id)
    )
    .where(ApiToken.token_hash == bindparam("digest"))
)


def _digest(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token_digest(token.strip())


def _token_user(
    session: Session,
    token_id: int,
    expires_at: datetime | None,
    last_used_at: datetime | None,
    user: User,
) -> User | None:
    """The token's user if the token is still valid (its last use noted)."""
    now = utcnow()
    if expires_at is not None and aware(expires_at) <= now:
        return None
    if last_used_at is None or now - aware(last_used_at) >= TOKEN_TOUCH_EVERY:
        session.execute(_TOUCH_TOKEN, {"token_id": token_id, "now": now})
    return user


def _user_from_token(session: Session, header: str) -> User | None:
    digest = _digest(header)
    if digest is None:
        return None
    found = session.execute(_TOKEN_AND_USER, {"digest": digest}).first()
    return _token_user(session, *found) if found is not None else None


def has_credentials(request: Request) -> bool:
    """A signed session cookie or a known API token, checked without a request session:
    the body limits ask this before a large body is read (api/body_limits.py)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.app.state.signer.loads(cookie) is not None:
        # Signed by us: a session that was valid; whether it still is waits for the route.
        return True
    header = request.headers.get("authorization")
    if not header:
        return False
    with transaction(request.app.state.session_factory) as session:
        return _user_from_token(session, header) is not None


# Writing last_used_at on every request made every read a write transaction (row locks on
# Postgres, the one write lock on SQLite); to the minute is all an owner needs to know.
TOKEN_TOUCH_EVERY = timedelta(minutes=1)
_TOUCH_TOKEN = (
    update(ApiToken)
    .where(ApiToken.id == bindparam("token_id"))
    .values(last_used_at=bindparam("now"))
)


def caller(request: Request, session: Session) -> User | None:
    """Who is asking: by API token, or by session cookie (None: nobody logged in). Worked
    out once per request, whichever dependency asks first."""
    state = request.state
    if not hasattr(state, "caller"):
        state.caller = _authenticate(request, session)
    found: User | None = state.caller
    return found


def _authenticate(request: Request, session: Session) -> User | None:
    header = request.headers.get("authorization")
    if header:
        user = _user_from_token(session, header)
        if user is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API token")
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        signer: SessionSigner = request.app.state.signer
        signed = signer.loads(cookie)
        user = session.get(User, signed[0]) if signed is not None else None
        if user is None or signed is None or signed[1] != user.session_epoch:
            # Unknown, forged, or ended by a logout.
            return None
        # Cookies ride along on cross-site requests; bearer tokens do not. So only
        # cookie-authenticated writes need the CSRF header the web pages send.
        if request.method not in SAFE_METHODS and not signer.csrf_ok(
            cookie, request.headers.get("x-csrf-token")
        ):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong X-CSRF-Token header")
    if not user.is_active:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this account is disabled")
    return user


def optional_user(request: Request, session: DbSession) -> User | None:
    return caller(request, session)


def required(user: User | None) -> User:
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "log in (POST /api/auth/login) or send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


async def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    return required(user)


CurrentUser = Annotated[User, Depends(current_user)]


async def require_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin only")
    return user


AdminUser = Annotated[User, Depends(require_admin)]


@dataclass
class Access:
    project: Project
    user: User
    role: Role

    @property
    def can_edit(self) -> bool:
        return self.role in (Role.owner, Role.editor)


def project_access(project_id: RowId, request: Request, session: DbSession) -> Access:
    # The caller is worked out here rather than by depending on CurrentUser: one hop to
    # the thread pool for both.
    header = request.headers.get("authorization")
    if header and not hasattr(request.state, "caller"):
        return _token_access(request, session, header, project_id)
    return _access(session, project_id, required(caller(request, session)))


def _token_access(request: Request, session: Session, header: str, project_id: int) -> Access:
    """A token's caller and their access to the project in one statement, with the
    answers _authenticate and _access give: most REST calls are of this kind."""
    digest = _digest(header)
    found = None
    if digest is not None:
        found = session.execute(
            _TOKEN_USER_AND_PROJECT, {"digest": digest, "project_id": project_id}
        ).first()
    if found is None or _token_user(session, *found[:4]) is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API token")
    user, project, role = found[3:]
    if not user.is_active:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this account is disabled")
    request.state.caller = user
    return _access_to(project, role, user, project_id)


def _access(session: Session, project_id: int, user: User) -> Access:
    found = session.execute(
        _PROJECT_AND_MEMBER, {"user_id": user.id, "project_id": project_id}
    ).first()
    project, role = found if found is not None else (None, None)
    return _access_to(project, role, user, project_id)


def _access_to(project: Project | None, role: Role | None, user: User, project_id: int) -> Access:
    """``role``: the caller's membership (None: not a member)."""
    if project is None or (role is None and not user.is_admin):
        # Same answer for "absent" and "not yours": project ids are not a secret,
        # but their existence should not leak to outsiders either.
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {project_id} not found")
    return Access(project=project, user=user, role=role if role is not None else Role.owner)


ProjectAccess = Annotated[Access, Depends(project_access)]


def editor(access: Access) -> Access:
    if not access.can_edit:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "viewers cannot change this project")
    return access


async def editor_access(access: ProjectAccess) -> Access:
    return editor(access)


EditorAccess = Annotated[Access, Depends(editor_access)]


async def owner_access(access: ProjectAccess) -> Access:
    if access.role is not Role.owner:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the project's owners can do this")
    return access


OwnerAccess = Annotated[Access, Depends(owner_access)]


class LoginRequired(Exception):
    """A page was asked for without a session: the app answers with a redirect to /login."""


def page_access(project_id: RowId, request: Request, session: DbSession) -> Access:
    """Project access for a web page: login first (a redirect), then the same membership
    check as the REST routes (one 404 for "absent" and "not yours")."""
    user = caller(request, session)
    if user is None:
        raise LoginRequired()
    return _access(session, project_id, user)


PageAccess = Annotated[Access, Depends(page_access)]


def load_version(session: Session, project_id: int, model_id: int) -> ModelVersion:
    """A model version of this project; 404 for one of another project, as for projects."""
    version = session.get(ModelVersion, model_id)
    if version is None or version.project_id != project_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {model_id} not found")
    return version


def same_origin(request: Request) -> bool:
    """Whether a browser sent this from our own pages. Login sets a cookie, so a forged
    cross-site login (login CSRF) must fail; scripts send neither header and pass."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host")


def password_login(request: Request, session: Session, username: str, password: str) -> User:
    """The one password check of every login route: same origin, throttled per address
    and user name (429 with Retry-After), then the password."""
    if not same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "log in from Winnow's own pages")
    throttle: LoginThrottle = request.app.state.throttle
    address = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(address, username)
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed logins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    user = authenticate(session, username, password)
    if user is None:
        throttle.failed(address, username)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
    return user
