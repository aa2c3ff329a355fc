"""Request and response models of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.tables import ImageState, JobStatus, Role


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    database: str
    broker: str
    version: str


class LoginIn(BaseModel):
    username: str
    password: str


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=8, max_length=200)
    is_admin: bool = False


class UserPatch(BaseModel):
    """What an admin changes of an account; fields left out stay as they are."""

    is_active: bool | None = Field(
        default=None, description="false disables the account: its sessions and tokens stop"
    )
    is_admin: bool | None = None
    password: str | None = Field(
        default=None,
        min_length=8,
        max_length=200,
        description="A new password; it ends every session of the user (tokens stay).",
    )


class UserOut(_Out):
    id: int
    username: str
    is_admin: bool
    is_active: bool
    created_at: datetime


class TokenIn(BaseModel):
    name: str = Field(default="api", min_length=1, max_length=100)
    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="Days until the token stops working; never if unset.",
    )


class TokenLogin(LoginIn, TokenIn):
    """A token made from a user name and password (scripts, curl)."""


class TokenOut(_Out):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown once; send it as 'Authorization: Bearer <token>'.")


class QueryIn(BaseModel):
    text: str = Field(min_length=1, max_length=300)
    negative_terms: list[str] = Field(default_factory=list)


class ClassIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    queries: list[QueryIn | str] = Field(default_factory=list)


class QueryOut(_Out):
    id: int
    text: str
    negative_terms: list[str]


class ClassOut(_Out):
    id: int
    name: str
    queries: list[QueryOut]


class ProjectIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    classes: list[ClassIn] = Field(default_factory=list)


class ProjectPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None


class ProjectOut(_Out):
    id: int
    name: str
    description: str
    created_at: datetime
    classes: list[ClassOut]
    role: Role | None = None
    counts: dict[str, int] = Field(default_factory=dict)


class MemberIn(BaseModel):
    username: str
    role: Role = Role.editor


class MemberOut(BaseModel):
    username: str
    user_id: int
    role: Role


class ImageOut(_Out):
    id: int
    sha256: str
    state: ImageState
    reject_reason: str | None
    label: str | None = None
    label_id: int | None
    version: int
    filename: str
    width: int | None
    height: int | None
    format: str | None
    file_size: int
    duplicate_of_id: int | None
    seen_count: int
    other_label_ids: list[int] = Field(
        default_factory=list, description="Other classes the same file was filed under."
    )
    source: str
    engine: str | None
    query: str | None
    rank: int | None
    image_url: str | None
    page_url: str | None
    title: str | None
    created_at: datetime
    loss: float | None = None
    predicted: str | None = None
    probability: float | None = None


class ImagePage(BaseModel):
    total: int
    items: list[ImageOut]


class ImagePatch(BaseModel):
    version: int = Field(description="The version you saw; a stale one answers 409.")
    label: str | None = Field(default=None, description="New class name.")
    action: Literal["relabel", "delete", "restore", "keep"] | None = None


class BulkItem(BaseModel):
    id: int
    version: int


class BulkPatch(BaseModel):
    images: list[BulkItem] = Field(min_length=1, max_length=1000)
    action: Literal["relabel", "delete", "restore", "keep"]
    label: str | None = None


class BulkResult(BaseModel):
    changed: list[ImageOut]
    conflicts: list[int] = Field(description="Ids whose version was stale; nothing changed there.")


class LabelEventOut(_Out):
    id: int
    image_id: int
    user: str | None
    created_at: datetime
    action: str
    old_label: str | None
    new_label: str | None
    old_state: str
    new_state: str
    source: str
    reverts_id: int | None


class JobOut(_Out):
    id: int
    project_id: int
    kind: str
    status: JobStatus
    params: dict[str, Any]
    done: int
    total: int
    message: str
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None = Field(
        default=None, description="The worker that ran it last, as <queues>@<host>."
    )
