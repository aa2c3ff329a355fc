"""Server paths out of what members read: job errors, messages and results.

Every member of a project reads its jobs; only the operator may learn where the server keeps
its files. Tracebacks go to the worker's log, never into the jobs table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# An absolute path of two or more parts not inside a URL (no "scheme:" or "//" just before).
_ABSOLUTE = re.compile(r"(?<![\w:/.~>-])/(?:[\w.~+-]+/)+[\w.~+-]*")


def redact(text: str, data_dir: Path | None = None) -> str:
    """``text`` with the data directory shown as ``<data>`` and other absolute paths as
    ``<path>``."""
    if data_dir is not None:
        for root in {str(data_dir), str(data_dir.resolve())}:
            text = text.replace(root, "<data>")
    return _ABSOLUTE.sub("<path>", text)


def redact_json(value: Any, data_dir: Path | None = None) -> Any:
    """``redact`` applied to every string of a JSON-like value."""
    if isinstance(value, str):
        return redact(value, data_dir)
    if isinstance(value, dict):
        return {k: redact_json(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, data_dir) for v in value]
    return value
