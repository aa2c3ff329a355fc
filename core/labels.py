"""Cleaning decisions on images: every change is a label event, and every event can be undone.

Nothing here deletes a file: "delete" is a state. Undo is a new event applying the inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.columns import utcnow
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
    """The one writer of label events: record the change and apply it to the image."""
    event = LabelEvent(
        project_id=image.project_id,
        image_id=image.id,
        user_id=user_id,
        action=action,
        old_label_id=image.label_id,
        new_label_id=new_label_id,
        old_state=image.state.value,
        new_state=new_state.value,
        source=source,
        reverts_id=reverts_id,
    )
    image.label_id = new_label_id
    image.state = new_state
    # Even a "keep" touches the row, so its version moves on and a reviewer acting on
    # the earlier view hears that someone decided about this image in the meantime.
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
) -> LabelEvent:
    """Apply one decision to an image and record it.

    ``restorable`` says whether a rejected image has a normalised copy to train from
    (a rejected duplicate does, a broken file does not); the caller knows the store.
    """
    if expected_version is not None and image.version != expected_version:
        raise StaleVersion(image)
    if change.action in (LabelAction.relabel, LabelAction.keep):
        # A person settling the label also settles a conflict between classes the same
        # file arrived under.
        image.other_label_ids = []
    if change.action == LabelAction.relabel:
        if change.label_id is None:
            raise InvalidChange("relabel needs a label")
        return record_event(
            session, image, LabelAction.relabel, change.label_id, image.state, user_id, source
        )
    if change.action == LabelAction.delete:
        if image.state is ImageState.deleted:
            raise InvalidChange(f"image {image.id} is already deleted")
        return record_event(
            session, image, LabelAction.delete, image.label_id, ImageState.deleted, user_id, source
        )
    if change.action == LabelAction.restore:
        if image.state is ImageState.deleted:
            target = _state_before_delete(session, image)
        elif image.state is ImageState.rejected:
            if not restorable:
                raise InvalidChange(
                    f"image {image.id} was rejected ({image.reject_reason}) "
                    "and has no decodable copy"
                )
            target = ImageState.ok
        else:
            raise InvalidChange(f"image {image.id} is {image.state.value}; nothing to restore")
        return record_event(
            session, image, LabelAction.restore, image.label_id, target, user_id, source
        )
    if change.action == LabelAction.keep:
        # A reviewed "this one is right": no change of state, but it is on the record,
        # so review queues can leave it out.
        return record_event(
            session, image, LabelAction.keep, image.label_id, image.state, user_id, source
        )
    raise InvalidChange(f"unknown action {change.action!r}; use one of {', '.join(ACTIONS)}")


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
