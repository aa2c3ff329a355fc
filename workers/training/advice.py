"""The lesson's advice, read off a finished run: what went wrong and what to do next.

Each item is ``{"code", "message", "next_step"}`` in plain words. The rules are the ones
the fastai course teaches for reading a training table.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

# A validation loss this many times its best earlier value counts as exploding.
EXPLODE_FACTOR = 3.0
# A training loss falling by less than this fraction over the run counts as "barely moved".
SLOW_FALL = 0.10
MIN_IMAGES_PER_CLASS = 20
MIN_VALID_IMAGES = 10


def _item(code: str, message: str, next_step: str) -> dict[str, str]:
    return {"code": code, "message": message, "next_step": next_step}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _value(row: Mapping[str, Any], key: str) -> float:
    """The metric, or NaN where it was not finite (stored as null)."""
    value = row.get(key)
    return float(value) if value is not None and _finite(value) else math.nan


def lr_too_high(history: Sequence[Mapping[str, Any]], lr: float) -> dict[str, str] | None:
    best = math.inf
    for row in history:
        train, valid = _value(row, "train_loss"), _value(row, "valid_loss")
        if not (math.isfinite(train) and math.isfinite(valid)):
            return _item(
                "lr_too_high",
                f"The loss stopped being a number in epoch {row['epoch']}: with learning rate "
                f"{lr:.2g} the training diverged.",
                "Run the LR finder and pick its suggestion, or retrain with a learning rate "
                "ten times smaller.",
            )
        if valid > EXPLODE_FACTOR * best:
            return _item(
                "lr_too_high",
                f"The validation loss exploded in epoch {row['epoch']} ({best:.3g} -> "
                f"{valid:.3g}): the learning rate {lr:.2g} is too high.",
                "Retrain with a learning rate ten times smaller, or the LR finder's valley.",
            )
        best = min(best, valid)
    return None


def underfitting(history: Sequence[Mapping[str, Any]], lr: float) -> dict[str, str] | None:
    """Training loss above validation loss: too low a learning rate, or too few epochs."""
    rows = [r for r in history if _finite(r.get("train_loss")) and _finite(r.get("valid_loss"))]
    if len(rows) < 2:
        return None
    first, last = rows[0]["train_loss"], rows[-1]["train_loss"]
    fell = (first - last) / first if first > 0 else 0.0
    if fell < SLOW_FALL:
        return _item(
            "lr_too_low",
            f"The training loss barely moved ({first:.3g} -> {last:.3g}, {fell:.0%}): "
            f"learning rate {lr:.2g} is too low for the model to learn in this many epochs.",
            "Run the LR finder and use its valley suggestion, or raise the learning rate tenfold.",
        )
    if last > rows[-1]["valid_loss"]:
        return _item(
            "too_few_epochs",
            f"The training loss ({last:.3g}) is still above the validation loss "
            f"({rows[-1]['valid_loss']:.3g}) and was still falling: the model is underfitting.",
            "Train for more epochs (or with a somewhat higher learning rate).",
        )
    return None


def too_many_epochs(
    history: Sequence[Mapping[str, Any]], best_epoch: int | None
) -> dict[str, str] | None:
    errors = [_value(r, "error_rate") for r in history]
    rising = 0
    for previous, current in itertools.pairwise(errors):
        if current > previous:
            rising += 1
        else:
            rising = 0
    if rising < 2 or best_epoch is None:
        return None
    return _item(
        "too_many_epochs",
        f"The error rate rose for the last {rising} epochs: the model started to overfit. "
        f"The best epoch ({best_epoch}) was kept.",
        f"Retrain with fewer epochs (about {best_epoch + 1} in all), or collect more data.",
    )


def not_enough_data(train_per_class: Mapping[str, int], num_valid: int) -> dict[str, str] | None:
    small = {c: n for c, n in train_per_class.items() if n < MIN_IMAGES_PER_CLASS}
    if not small and num_valid >= MIN_VALID_IMAGES:
        return None
    parts = [f"{c}: {n}" for c, n in sorted(small.items(), key=lambda kv: kv[1])]
    detail = f" Training images per class: {', '.join(parts)}." if parts else ""
    return _item(
        "not_enough_data",
        f"There is not enough data to train or to judge the model ({num_valid} validation "
        f"images).{detail}",
        f"Harvest or upload more images: at least {MIN_IMAGES_PER_CLASS} per class for "
        "training, more for a trustworthy error rate.",
    )


def advise(
    history: Sequence[Mapping[str, Any]],
    best_epoch: int | None,
    lr: float,
    train_per_class: Mapping[str, int],
    num_valid: int,
    weights_note: str | None = None,
) -> list[dict[str, str]]:
    advice: list[dict[str, str]] = []
    if weights_note:
        advice.append(
            _item(
                "random_init",
                weights_note,
                "Give the workers internet access once (weights are cached) or set a local "
                "weights file in the training parameters.",
            )
        )
    high = lr_too_high(history, lr)
    if high is not None:
        advice.append(high)
    else:
        for rule in (underfitting(history, lr), too_many_epochs(history, best_epoch)):
            if rule is not None:
                advice.append(rule)
    small = not_enough_data(train_per_class, num_valid)
    if small is not None:
        advice.append(small)
    return advice
