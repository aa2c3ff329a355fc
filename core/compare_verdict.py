"""A comparison of two model versions said in plain words (core.compare measures it)."""

from __future__ import annotations


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def verdict(
    cleaned: int,
    shared: int,
    before: float | None,
    after: float | None,
    num_before: int,
    num_after: int,
    relabelled: int,
) -> str:
    """The comparison in plain words: the like-for-like error, before and after."""
    if not shared or before is None or after is None:
        return (
            "The two versions share no validation image, so they cannot be compared image by "
            "image; retrain with the same split seed and validation share."
        )
    doing = f"Cleaning {_images(cleaned)}" if cleaned else "Retraining with nothing cleaned"
    after_doing = f"After cleaning {_images(cleaned)}" if cleaned else "With nothing cleaned"
    on = f"on the same {shared} validation image{'' if shared == 1 else 's'}"
    if after < before:
        text = f"{doing} cut the error from {_percent(before)} to {_percent(after)} {on}."
    elif after > before:
        text = f"{after_doing}, the error rose from {_percent(before)} to {_percent(after)} {on}."
    else:
        text = f"{after_doing}, the error did not change: {_percent(after)} {on}."
    if relabelled:
        text += (
            f" Of those, {relabelled} {'was' if relabelled == 1 else 'were'} relabelled; "
            "both versions are judged against the new labels."
        )
    if shared < num_before or shared < num_after:
        text += (
            f" The versions validated on {num_before} and {num_after} images; only the "
            f"{shared} they share are compared."
        )
    return text
