"""Tables of cleaning as a team: the shared queue's leases and blind second opinions."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.columns import UTCDateTime, enum_column, utcnow
from core.db import Base


class ReviewLease(Base):
    """An image handed to one reviewer of the shared queue: nobody else gets it until the
    lease ends (released, or `expires_at` passed without activity)."""

    __tablename__ = "review_leases"

    # One lease per image at a time: the unique key is what stops two reviewers taking it.
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The second-opinion request it was handed for, or None for a first review.
    opinion_id: Mapped[int | None] = mapped_column(
        ForeignKey("second_opinions.id", ondelete="CASCADE")
    )
    leased_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_review_leases_holder", "project_id", "user_id"),)


class OpinionState(enum.StrEnum):
    open = "open"
    agreed = "agreed"
    disagreed = "disagreed"


class SecondOpinion(Base):
    """A decision checked blind by a second person: they see the image, not the decision."""

    __tablename__ = "second_opinions"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    # The decision under check, and what it said: a class name's id, or None for "delete".
    event_id: Mapped[int] = mapped_column(ForeignKey("label_events.id", ondelete="CASCADE"))
    first_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    first_label_id: Mapped[int | None] = mapped_column(
        ForeignKey("classes.id", ondelete="SET NULL")
    )
    first_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[OpinionState] = mapped_column(
        enum_column(OpinionState, "opinion_state"), default=OpinionState.open
    )
    second_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    second_label_id: Mapped[int | None] = mapped_column(
        ForeignKey("classes.id", ondelete="SET NULL")
    )
    second_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # One open check per decision.
        UniqueConstraint("event_id", name="uq_second_opinions_event"),
    )
