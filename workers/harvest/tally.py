"""Counting what a harvest or URL import did, for progress messages and the job result."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Enough to show a person what went wrong; the counts by reason cover the rest.
MAX_FAILURES = 1000
COUNTS = ("found", "downloaded", "duplicates", "failed", "skipped")


@dataclass
class Tally:
    found: int = 0
    downloaded: int = 0
    duplicates: int = 0
    failed: int = 0
    # Already in the project by image URL (a rerun or a redelivered task): not fetched again.
    skipped: int = 0
    by_class: dict[str, Counter[str]] = field(default_factory=dict)
    by_reason: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    searches: list[dict[str, Any]] = field(default_factory=list)

    def count(self, class_name: str, what: str, n: int = 1) -> None:
        setattr(self, what, getattr(self, what) + n)
        self.by_class.setdefault(class_name, Counter())[what] += n

    def fail(self, url: str, class_name: str, reason: str, detail: str = "") -> None:
        self.count(class_name, "failed")
        self.by_reason[reason] += 1
        if len(self.failures) < MAX_FAILURES:
            entry = {"url": url[:2000], "reason": reason, "class": class_name}
            if detail:
                entry["detail"] = detail[:300]
            self.failures.append(entry)

    @property
    def processed(self) -> int:
        return self.downloaded + self.duplicates + self.failed + self.skipped

    def message(self, phase: str, verified: int | None = None) -> str:
        text = (
            f"{phase}: found {self.found}, downloaded {self.downloaded}, "
            f"failed {self.failed}, duplicates {self.duplicates}, skipped {self.skipped}"
        )
        return text if verified is None else f"{text}, verified {verified}"

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = {name: getattr(self, name) for name in COUNTS}
        result["classes"] = {
            name: {what: counts[what] for what in COUNTS} for name, counts in self.by_class.items()
        }
        result["failures_by_reason"] = dict(self.by_reason.most_common())
        result["failures"] = self.failures
        result["failures_truncated"] = self.failed > len(self.failures)
        if self.searches:
            result["searches"] = self.searches
        return result
