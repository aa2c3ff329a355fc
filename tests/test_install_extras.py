"""The package's dependencies split by image: a plain install (the API image) brings no
torch, Playwright or Chromium, and still brings every library the API process imports."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "torchvision", "playwright", "cleanlab", "onnx", "onnxscript", "aiohttp"}
OURS = {"core", "api", "web", "workers", "migrations", "tests"}


def _project() -> dict[str, object]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert isinstance(project, dict)
    return project


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution a pip install of ``requirements`` brings, by what is installed
    here (each requirement's own requirements, with the extras asked for)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            needs = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # a dependency of another platform or Python
        for line in needs:
            needed = Requirement(line)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                todo.append(needed)
    return {name for name, _ in seen}


def _imported_modules(*packages: str) -> set[str]:
    found: set[str] = set()
    for package in packages:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - OURS - {"__future__"}


def test_a_plain_install_brings_no_torch_or_browser() -> None:
    base = _closure(list(_project()["dependencies"]))  # type: ignore[call-overload]
    assert not base & HEAVY, sorted(base & HEAVY)
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    worker = {canonicalize_name(Requirement(r).name) for r in extras["worker"]}
    assert worker >= HEAVY


def test_a_plain_install_brings_everything_the_api_process_imports() -> None:
    base = _closure(list(_project()["dependencies"]))  # type: ignore[call-overload]
    providers = metadata.packages_distributions()
    missing = {
        module: providers.get(module, [])
        for module in _imported_modules("core", "api", "web")
        if not {canonicalize_name(d) for d in providers.get(module, [])} & base
    }
    assert missing == {}
