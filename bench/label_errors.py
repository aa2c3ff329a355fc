"""Which ranking finds wrong labels: Winnow's rank job against cleanlab and in-sample losses.

scikit-learn's handwritten digits, upscaled, with labels flipped on purpose: uniform 10%,
uniform 20%, and class-conditional 20% between look-alike digits (1-7, 3-8, 4-9, 5-6: each
image of those classes flipped to its partner with probability 0.2), seeds 0, 1 and 2 by
default. Winnow's side goes through its own train and rank jobs (local_job, as the product
runs them; trained without left-right flips, as digits should be) and ranks by the
out-of-fold self-confidence of the k-fold fine-tunes, trained in rounds (each after the
first without the images the round before flagged, the later rounds averaged: the rank
job's default); with --first-round also the first round alone. Against it, in the same run:
cleanlab.filter.find_label_issues (issues first, ranked by label quality, then the rest)
on out-of-fold probabilities of logistic regression and of an RBF SVC on the pixels
(cross_val_predict), and the in-sample top losses of the same CNN (fastai's lesson).
k is the number of flipped labels. Beside Winnow's order (out-of-fold self-confidence) the same
scores with confident learning's flags first are listed. Last line: the RESULT line, each
figure the mean over the seeds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cleanlab.filter import find_label_issues  # noqa: E402
from cleanlab.rank import get_label_quality_scores  # noqa: E402
from sklearn.calibration import CalibratedClassifierCV  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402
from sklearn.model_selection import cross_val_predict  # noqa: E402
from sklearn.svm import SVC  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bench.synthetic import job_context, winnow_project  # noqa: E402
from core.db import make_engine, make_session_factory, transaction  # noqa: E402
from core.demo import NAMES, digit_png  # noqa: E402
from core.tables import Image, ImageScore  # noqa: E402
from workers.rank import rank_job  # noqa: E402
from workers.train import train_job  # noqa: E402

PAIRS = {1: 7, 7: 1, 3: 8, 8: 3, 4: 9, 9: 4, 5: 6, 6: 5}
NOISE = ("u10", "u20", "cc20")


def noisy(labels: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    out = labels.copy()
    if kind == "cc20":
        for i, y in enumerate(labels):
            if int(y) in PAIRS and rng.random() < 0.2:
                out[i] = PAIRS[int(y)]
        return out
    rate = 0.1 if kind == "u10" else 0.2
    flip = rng.choice(len(labels), round(rate * len(labels)), replace=False)
    out[flip] = (labels[flip] + rng.integers(1, 10, len(flip))) % 10
    return out


def metrics(order: np.ndarray, wrong: np.ndarray, suspicion: np.ndarray) -> dict[str, float]:
    k = int(wrong.sum())
    hits = int(wrong[order[:k]].sum())
    return {"p": hits / k, "r": hits / k, "auprc": float(average_precision_score(wrong, suspicion))}


def cleanlab_order(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    quality = get_label_quality_scores(labels, probs)
    issues = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    rest = np.array([i for i in np.argsort(quality) if i not in set(issues.tolist())], dtype=int)
    order = np.concatenate([issues, rest]).astype(int)
    suspicion = np.empty(len(labels))
    suspicion[order] = np.arange(len(labels), 0, -1)
    return order, suspicion


def winnow_orders(
    x: np.ndarray, labels: np.ndarray, args: argparse.Namespace, work: Path
) -> dict[str, np.ndarray]:
    paths = []
    for i, (pixels, y) in enumerate(zip(x, labels, strict=True)):
        path = work / "digits" / NAMES[int(y)] / f"digit-{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(digit_png(pixels * 16, args.size))
        paths.append(path)
    settings, pid = winnow_project(work / "data", paths)
    train = {
        "arch": "resnet18",
        "pretrained": False,
        "image_size": args.size,
        "epochs": args.epochs,
        "freeze_epochs": 0,
        "lr": 3e-3,
        "batch_size": 64,
        # A mirrored digit is another glyph (or none): the recipe a person would pick for
        # digits, letters or signs. fastai's aug_transforms(do_flip=False).
        "flip": False,
    }
    train_job(job_context(settings, pid, "train", train))
    # The default (pruned rounds), and with --first-round the first round alone as well.
    suspicion: dict[str, np.ndarray] = {}
    runs = [(1, "one round")] if args.first_round else []
    for rounds, name in [*runs, (args.rounds, "out_of_fold")]:
        rank = {"out_of_fold": True, "folds": args.folds, "rounds": rounds}
        rank_job(job_context(settings, pid, "rank", rank))
        read = _scores(settings.db_url, len(labels))
        suspicion[name] = read["out_of_fold"]
        suspicion["out_of_fold flags first"] = read["out_of_fold flags first"]
        suspicion["in_sample"] = read["in_sample"]
    return suspicion


def _scores(db_url: str, count: int) -> dict[str, np.ndarray]:
    """Suspicion per digit (higher: more likely wrong) of each stored ranking."""
    engine = make_engine(db_url)
    suspicion: dict[str, np.ndarray] = {}
    with transaction(make_session_factory(engine)) as s:
        index = {
            image_id: int(name.split("-")[1].split(".")[0])
            for image_id, name in s.execute(select(Image.id, Image.filename))
        }
        for method in ("out_of_fold", "in_sample"):
            values = np.zeros(count)
            flagged = np.zeros(count)
            for image_id, conf, issue in s.execute(
                select(ImageScore.image_id, ImageScore.self_confidence, ImageScore.issue).where(
                    ImageScore.method == method
                )
            ):
                values[index[image_id]] = -float(conf if conf is not None else 0.0)
                flagged[index[image_id]] = 2.0 if issue else 0.0
            suspicion[method] = values
            # cleanlab's order on Winnow's own scores: confident learning's flags (per-class
            # thresholds) first, each part by self-confidence.
            suspicion[f"{method} flags first"] = values + flagged
    engine.dispose()
    return suspicion


def run(args: argparse.Namespace) -> None:
    digits = load_digits()
    x, truth = digits.data / 16.0, digits.target
    if args.limit:
        x, truth = x[: args.limit], truth[: args.limit]
    table: dict[tuple[str, str], list[dict[str, float]]] = {}
    for seed in args.seeds:
        for kind in NOISE:
            rng = np.random.default_rng(seed)
            labels = noisy(truth, kind, rng)
            wrong = labels != truth
            results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for name, model in (
                ("cleanlab+logreg", LogisticRegression(max_iter=2000)),
                ("cleanlab+svc", CalibratedClassifierCV(SVC(), ensemble=False)),
            ):
                probs = cross_val_predict(model, x, labels, cv=5, method="predict_proba")
                results[name] = cleanlab_order(labels, probs)
            with tempfile.TemporaryDirectory() as tmp:
                susp = winnow_orders(x, labels, args, Path(tmp))
            for name, key in (
                ("winnow", "out_of_fold"),
                ("winnow, one round", "one round"),
                ("winnow, flags first", "out_of_fold flags first"),
                ("in-sample top losses", "in_sample"),
            ):
                if key in susp:
                    results[name] = (np.argsort(-susp[key], kind="stable"), susp[key])
            for name, (order, suspicion) in results.items():
                row = metrics(order, wrong, suspicion)
                table.setdefault((kind, name), []).append(row)
                print(f"seed {seed} {kind:5} {name:22} P@k {row['p']:.3f} AUPRC {row['auprc']:.3f}")
    print("| noise | method | P@k | R@k | AUPRC |")
    print("|---|---|---|---|---|")
    mean: dict[tuple[str, str], dict[str, float]] = {}
    for (kind, name), rows in table.items():
        mean[kind, name] = {m: float(np.mean([r[m] for r in rows])) for m in ("p", "r", "auprc")}
        m = mean[kind, name]
        print(f"| {kind} | {name} | {m['p']:.3f} | {m['r']:.3f} | {m['auprc']:.3f} |")
    w = {kind: mean[kind, "winnow"]["p"] for kind in NOISE}
    a = {
        kind: max(v["p"] for (k, n), v in mean.items() if k == kind and not n.startswith("winnow"))
        for kind in NOISE
    }
    print(
        f"RESULT label_errors winnow={w['u10']:.3f} anchor={a['u10']:.3f} unit=p_at_k "
        f"ratio={w['u10'] / a['u10']:.3f} winnow_u20={w['u20']:.3f} anchor_u20={a['u20']:.3f} "
        f"winnow_cc20={w['cc20']:.3f} anchor_cc20={a['cc20']:.3f} "
        f"seconds={time.perf_counter() - args.started:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="The rank job's rounds.")
    parser.add_argument(
        "--first-round",
        action="store_true",
        help="Also rank with the first round alone (rounds=1), as a rank job of its own.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=0, help="Use the first N digits (0: all).")
    args = parser.parse_args()
    args.started = time.perf_counter()
    run(args)


if __name__ == "__main__":
    main()
