"""Cleaning decisions on images: every change is a label event, and every event can be undone.

Nothing here deletes a file: "delete" is a state. Undo is a new event applying the inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from typing import cast as cast_type

from sqlalchemy import CursorResult, Update, bindparam, insert, inspect, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from core.columns import utcnow
from core.db import table_of
from core.tables import EventSource, Image, ImageState, LabelAction, LabelEvent

# What a person can ask for; undo has its own call, reject and accept are the verifier's.
ACTIONS = (LabelAction.relabel, LabelAction.delete, LabelAction.restore, LabelAction.keep)


class StaleVersion(Exception):
    """The caller edited an image version that someone else has changed since."""

    def __init__(self, image: Image) -> None:
        super().__init__(f"image {image.id} is at version {image.version}")
        self.image = image


class InvalidChange(Exception):
    """The change makes no sense for the image as it is (said in words)."""


@dataclass(frozen=True)
class Change:
    action: LabelAction
    label_id: int | None = None


def _event_row(
    image: Image,
    action: LabelAction,
    new_label_id: int | None,
    new_state: ImageState,
    user_id: int | None,
    source: EventSource,
    reverts_id: int | None = None,
) -> dict[str, object]:
    """A label event's columns: the change from the image as it is now."""
    return {
        "project_id": image.project_id,
        "image_id": image.id,
        "user_id": user_id,
        "action": action,
        "old_label_id": image.label_id,
        "new_label_id": new_label_id,
        "old_state": image.state.value,
        "new_state": new_state.value,
        "source": source,
        "reverts_id": reverts_id,
    }


def record_event(
    session: Session,
    image: Image,
    action: LabelAction,
    new_label_id: int | None,
    new_state: ImageState,
    user_id: int | None,
    source: EventSource,
    reverts_id: int | None = None,
    reason: str | None = None,
) -> LabelEvent:
    """Record a change and apply it to the image in the session's unit of work, with
    whatever else the caller changes about the image (the verifier: its size and format)."""
    event = LabelEvent(
        **_event_row(image, action, new_label_id, new_state, user_id, source, reverts_id)
    )
    image.label_id = new_label_id
    image.state = new_state
    image.updated_at = utcnow()
    if reason is not None:
        image.reject_reason = reason
    session.add(event)
    return event


def _state_before_delete(session: Session, image: Image) -> ImageState:
    last = session.scalar(
        select(LabelEvent)
        .where(LabelEvent.image_id == image.id, LabelEvent.new_state == ImageState.deleted.value)
        .order_by(LabelEvent.id.desc())
        .limit(1)
    )
    if last is None or last.old_state == ImageState.deleted.value:
        return ImageState.ok
    return ImageState(last.old_state)


def apply_change(
    session: Session,
    image: Image,
    change: Change,
    user_id: int | None,
    source: EventSource = EventSource.api,
    expected_version: int | None = None,
    restorable: bool = True,
) -> int:
    """Apply one person's decision to an image and record it; the new event's id.

    ``restorable`` says whether a rejected image has a normalised copy to train from
    (a rejected duplicate does, a broken file does not); the caller knows the store.

    Written as two statements, the image's update (only if its version is still the one
    read) and the event's insert, rather than through the session's unit of work, which
    cost more than the rest of a decision's Python. The loaded image is brought up to date.
    """
    if inspect(image).modified:
        session.flush()  # the caller's own pending changes first, with their version
    if expected_version is not None and image.version != expected_version:
        raise StaleVersion(image)
    action, new_state = _decide(session, image, change, restorable)
    new_label_id = change.label_id if action is LabelAction.relabel else image.label_id
    # A person settling the label also settles a conflict between the classes the same
    # file arrived under.
    settles = action in (LabelAction.relabel, LabelAction.keep)
    # Even a "keep" touches the row, so its version moves on and a reviewer acting on the
    # earlier view hears that someone decided about this image in the meantime.
    now: dict[str, object] = {"label_id": new_label_id, "state": new_state, "updated_at": utcnow()}
    if settles:
        now["other_label_ids"] = []
    written = session.execute(
        _UPDATES[settles],
        {
            "image_id": image.id,
            "seen": image.version,
            "next": image.version + 1,
            **{f"new_{key}": value for key, value in now.items()},
        },
    )
    if cast_type(CursorResult[Any], written).rowcount != 1:
        # Changed by another transaction between this one's read and its write.
        session.refresh(image)
        raise StaleVersion(image)
    event_id: int = session.execute(
        _INSERT_EVENT, _event_row(image, action, new_label_id, new_state, user_id, source)
    ).scalar_one()
    for key, value in {**now, "version": image.version + 1}.items():
        set_committed_value(image, key, value)
    return event_id


def _decide(
    session: Session, image: Image, change: Change, restorable: bool
) -> tuple[LabelAction, ImageState]:
    """The action a change is and the state it leaves the image in, or why it makes no sense."""
    if change.action == LabelAction.relabel:
        if change.label_id is None:
            raise InvalidChange("relabel needs a label")
        return LabelAction.relabel, image.state
    if change.action == LabelAction.delete:
        if image.state is ImageState.deleted:
            raise InvalidChange(f"image {image.id} is already deleted")
        return LabelAction.delete, ImageState.deleted
    if change.action == LabelAction.restore:
        if image.state is ImageState.deleted:
            return LabelAction.restore, _state_before_delete(session, image)
        if image.state is ImageState.rejected:
            if not restorable:
                raise InvalidChange(
                    f"image {image.id} was rejected ({image.reject_reason}) "
                    "and has no decodable copy"
                )
            return LabelAction.restore, ImageState.ok
        raise InvalidChange(f"image {image.id} is {image.state.value}; nothing to restore")
    if change.action == LabelAction.keep:
        # A reviewed "this one is right": no change of state, but it is on the record,
        # so review queues can leave it out.
        return LabelAction.keep, image.state
    raise InvalidChange(f"unknown action {change.action!r}; use one of {', '.join(ACTIONS)}")


_IMAGES = table_of(Image)
_EVENTS = table_of(LabelEvent)


def _update(settles: bool) -> Update:
    columns = ["label_id", "state", "updated_at", *(["other_label_ids"] if settles else [])]
    return (
        update(_IMAGES)
        .where(_IMAGES.c.id == bindparam("image_id"), _IMAGES.c.version == bindparam("seen"))
        .values(version=bindparam("next"), **{c: bindparam(f"new_{c}") for c in columns})
    )


# Built once: a decision is the hottest write of a cleaning session.
_UPDATES = {settles: _update(settles) for settles in (False, True)}
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)


def undo_event(
    session: Session,
    event: LabelEvent,
    image: Image,
    user_id: int | None,
    source: EventSource = EventSource.api,
) -> LabelEvent:
    """Apply the inverse of ``event`` as a new event, if nothing changed the image since."""
    if image.label_id != event.new_label_id or image.state.value != event.new_state:
        raise InvalidChange(
            f"image {image.id} changed after event {event.id}; undo the later change first"
        )
    already = session.scalar(select(LabelEvent.id).where(LabelEvent.reverts_id == event.id))
    if already is not None:
        raise InvalidChange(f"event {event.id} was already undone by event {already}")
    return record_event(
        session,
        image,
        LabelAction.undo,
        event.old_label_id,
        ImageState(event.old_state),
        user_id,
        source,
        reverts_id=event.id,
    )
