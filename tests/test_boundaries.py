"""The package boundaries, held by tests: core is imported by the edges, never the reverse,
and the API process never loads torch, Playwright or the workers."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "playwright", "workers", "cleanlab")
EDGES = ("api", "web", "workers")


def _loaded_after(statement: str, env: dict[str, str] | None = None) -> set[str]:
    """Top-level modules loaded by a fresh interpreter after ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env=env
    )
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_api_process_loads_no_torch_playwright_or_workers(tmp_path: Path) -> None:
    env = {"WINNOW_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    loaded = _loaded_after("import api.main\napi.main.create_app()", env)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_core_imports_no_edge_in_its_source() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & set(EDGES))
        for path in sorted((REPO / "core").rglob("*.py"))
        if _imports(path) & set(EDGES)
    }
    assert offenders == {}


def test_core_imports_no_edge_when_loaded() -> None:
    modules = sorted(p.stem for p in (REPO / "core").glob("*.py") if p.stem != "__init__")
    loaded = _loaded_after("\n".join(f"import core.{m}" for m in modules))
    assert not loaded & set(EDGES), sorted(loaded & set(EDGES))
