"""A decision is written only over the version it was made on: of two people deciding about
the same image at once, the second hears that it changed, on SQLite and Postgres, and the
trail holds the first decision alone."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from core.db import make_session_factory, transaction
from core.labels import Change, StaleVersion, apply_change
from core.tables import Image, LabelAction, LabelEvent
from tests.scored import scored_project


def test_the_second_of_two_decisions_made_on_one_version_is_refused(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with transaction(factory) as s:
        seeded = scored_project(s, ["grizzly", "black", "teddy"], 2, loss=lambda n: n)
        image_id = seeded.images[0].id
        grizzly, black, teddy = seeded.class_ids
    first, second = factory(), factory()
    try:
        mine, theirs = first.get(Image, image_id), second.get(Image, image_id)
        assert mine is not None and theirs is not None
        assert mine.version == theirs.version == 1 and mine.label_id == grizzly
        event_id = apply_change(
            first, mine, Change(LabelAction.relabel, black), None, expected_version=1
        )
        # The loaded image is what the database now holds.
        assert (mine.label_id, mine.version, mine.other_label_ids) == (black, 2, [])
        first.commit()
        # The second read version 1 too, and its own check passes: the write refuses.
        with pytest.raises(StaleVersion) as refused:
            apply_change(
                second, theirs, Change(LabelAction.relabel, teddy), None, expected_version=1
            )
        assert (refused.value.image.version, refused.value.image.label_id) == (2, black)
        second.rollback()
        # A decision on the version it now shows goes through.
        apply_change(second, theirs, Change(LabelAction.keep), None, expected_version=2)
        second.commit()
    finally:
        first.close()
        second.close()
    with transaction(factory) as s:
        events = s.scalars(select(LabelEvent).where(LabelEvent.image_id == image_id)).all()
        image = s.get(Image, image_id)
        assert image is not None and (image.label_id, image.version) == (black, 3)
    assert [(e.action, e.old_label_id, e.new_label_id) for e in events] == [
        (LabelAction.relabel, grizzly, black),
        (LabelAction.keep, black, black),
    ]
    assert events[0].id == event_id
