"""Tables of the whole loop: users, projects, images, label events, jobs, models, scores."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.columns import UTCDateTime, enum_column, utcnow
from core.db import Base
from core.kinds import JobKindName


class Role(enum.StrEnum):
    owner = "owner"
    editor = "editor"
    viewer = "viewer"


class ImageState(enum.StrEnum):
    pending = "pending"
    ok = "ok"
    rejected = "rejected"
    deleted = "deleted"


class ImageSource(enum.StrEnum):
    """Where an image came from."""

    upload = "upload"
    zip = "zip"
    url_list = "url_list"
    search = "search"
    demo = "demo"


class LabelAction(enum.StrEnum):
    """What a label event did. People relabel, delete, restore, keep and undo; the verifier
    rejects and accepts."""

    relabel = "relabel"
    delete = "delete"
    restore = "restore"
    keep = "keep"
    undo = "undo"
    reject = "reject"
    accept = "accept"


class EventSource(enum.StrEnum):
    """Who asked for a label event: a REST client, the web UI, a bulk call or the verifier."""

    api = "api"
    ui = "ui"
    bulk = "bulk"
    verify = "verify"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Session generation: signed into each session cookie; logout moves it on, which ends
    # every session of the user server-side (a stolen cookie dies with the logout).
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # Only a SHA-256 of the token is stored; the token itself is shown once.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # None: valid until revoked.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The ranking that images.review_rank holds (a model version and a scoring method);
    # listings by loss use it when it is the ranking they show (core/review_rank.py).
    review_model_id: Mapped[int | None] = mapped_column(Integer)
    review_method: Mapped[str | None] = mapped_column(String(16))

    classes: Mapped[list[ImageClass]] = relationship(
        back_populates="project", order_by="ImageClass.id", cascade="all, delete-orphan"
    )


class ProjectMember(Base):
    __tablename__ = "project_members"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[Role] = mapped_column(enum_column(Role, "role"), default=Role.editor)

    user: Mapped[User] = relationship()


class ImageClass(Base):
    __tablename__ = "classes"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))

    project: Mapped[Project] = relationship(back_populates="classes")
    queries: Mapped[list[SearchQuery]] = relationship(
        back_populates="image_class", order_by="SearchQuery.id", cascade="all, delete-orphan"
    )


class SearchQuery(Base):
    __tablename__ = "search_queries"

    id: Mapped[int] = mapped_column(primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(String(300))
    # The lesson's "-dog -arctos": words that must not appear in results.
    negative_terms: Mapped[list[str]] = mapped_column(JSON, default=list)

    image_class: Mapped[ImageClass] = relationship(back_populates="queries")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("project_id", "sha256"),
        # Imports skip URLs a project already has: one lookup per URL. A hash index on
        # Postgres, whose B-tree entries cannot hold the longest URLs.
        Index("ix_images_image_url", "image_url", postgresql_using="hash"),
        # The review queue's default order (core/review_rank.py): a page is an index range.
        Index("ix_images_review", "project_id", "review_rank", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[ImageState] = mapped_column(
        enum_column(ImageState, "image_state"), default=ImageState.pending, index=True
    )
    reject_reason: Mapped[str | None] = mapped_column(String(200))
    label_id: Mapped[int | None] = mapped_column(
        ForeignKey("classes.id", ondelete="SET NULL"), index=True
    )
    # Optimistic concurrency: every UPDATE checks and bumps it (SQLAlchemy version counter).
    version: Mapped[int] = mapped_column(Integer, default=1)

    filename: Mapped[str] = mapped_column(String(300), default="")
    file_size: Mapped[int] = mapped_column(BigInteger, default=0)
    format: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    phash: Mapped[str | None] = mapped_column(String(16), index=True)
    duplicate_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    # How many times this exact file arrived (harvests, uploads); stored once.
    seen_count: Mapped[int] = mapped_column(Integer, default=1)
    # Other classes this exact file was also filed under (the same bytes in two class
    # folders or two searches): a conflict for a reviewer, not a silent first-wins.
    other_label_ids: Mapped[list[int]] = mapped_column(JSON, default=list)

    # Provenance
    source: Mapped[ImageSource] = mapped_column(
        enum_column(ImageSource, "image_source"), default=ImageSource.upload
    )
    engine: Mapped[str | None] = mapped_column(String(32))
    query: Mapped[str | None] = mapped_column(String(300))
    rank: Mapped[int | None] = mapped_column(Integer)
    image_url: Mapped[str | None] = mapped_column(Text)
    page_url: Mapped[str | None] = mapped_column(Text)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    harvest_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )

    # The image's place (1: highest loss) in the ranking of the project's review_model_id
    # and review_method; None without a score there. Written with the scores (workers/rank).
    review_rank: Mapped[int | None] = mapped_column(Integer)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}


class LabelEvent(Base):
    """One change to an image's label or state. Undo applies the inverse as a new event."""

    __tablename__ = "label_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    action: Mapped[LabelAction] = mapped_column(enum_column(LabelAction, "label_action"))
    old_label_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id", ondelete="SET NULL"))
    new_label_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id", ondelete="SET NULL"))
    old_state: Mapped[str] = mapped_column(String(16))
    new_state: Mapped[str] = mapped_column(String(16))
    source: Mapped[EventSource] = mapped_column(
        enum_column(EventSource, "event_source"), default=EventSource.api
    )
    reverts_id: Mapped[int | None] = mapped_column(
        ForeignKey("label_events.id", ondelete="SET NULL")
    )

    user: Mapped[User | None] = relationship()


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[JobKindName] = mapped_column(enum_column(JobKindName, "job_kind"))
    status: Mapped[JobStatus] = mapped_column(
        enum_column(JobStatus, "job_status"), default=JobStatus.queued, index=True
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the broker took the job's message; None while it has not (it was down): the
    # workers' watch sends such jobs again (workers/recovery.py), so none waits for ever.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Written every few seconds while a worker runs the job; a stale one means the
    # worker died, and the job is queued again (see workers/recovery.py).
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The Celery node that claimed the job last (e.g. "gpu@trainbox"): where its log is.
    worker: Mapped[str | None] = mapped_column(String(200))


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), unique=True
    )
    arch: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    classes: Mapped[list[str]] = mapped_column(JSON, default=list)
    split_seed: Mapped[int] = mapped_column(Integer, default=42)
    valid_pct: Mapped[float] = mapped_column(Float, default=0.2)
    num_train: Mapped[int] = mapped_column(Integer, default=0)
    num_valid: Mapped[int] = mapped_column(Integer, default=0)
    # Per epoch: {"epoch", "stage", "train_loss", "valid_loss", "error_rate", "accuracy", "seconds"}
    metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    error_rate: Mapped[float | None] = mapped_column(Float)
    advice: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    interpretation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Paths relative to the data directory: weights, metadata, onnx.
    files: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Every validation image at the best epoch: {"image_ids", "actual", "predicted"} (class
    # indexes into `classes`), for comparing versions on the images they share. Deferred:
    # only the comparison reads it.
    validation: Mapped[dict[str, list[int]] | None] = mapped_column(JSON, deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    job: Mapped[Job | None] = relationship(lazy="selectin")

    @property
    def status(self) -> str:
        """ready (exported), training, failed or cancelled (its job's end, no export), or
        incomplete (no export and no job left to say why)."""
        if self.files:
            return "ready"
        if self.job is None:
            return "incomplete"
        if self.job.status in (JobStatus.queued, JobStatus.running):
            return "training"
        return "incomplete" if self.job.status is JobStatus.succeeded else self.job.status.value


class ImageScore(Base):
    __tablename__ = "image_scores"
    __table_args__ = (
        UniqueConstraint("model_version_id", "image_id", "method"),
        # The review queue: one model's scores by loss, the worst first.
        Index("ix_image_scores_review", "model_version_id", "method", "loss"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    # "in_sample" (the lesson's top losses) or "out_of_fold" (cross-validated, more honest).
    method: Mapped[str] = mapped_column(String(16))
    loss: Mapped[float] = mapped_column(Float)
    label_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id", ondelete="SET NULL"))
    predicted_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id", ondelete="SET NULL"))
    probability: Mapped[float] = mapped_column(Float)
    # Side by side with the loss, from the same probabilities: the label's own probability,
    # cleanlab's normalised margin (label minus best other class, scaled to 0..1; low is
    # suspicious) and confident learning's verdict with per-class thresholds.
    self_confidence: Mapped[float | None] = mapped_column(Float)
    margin: Mapped[float | None] = mapped_column(Float)
    issue: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
