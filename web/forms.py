"""The project page's job forms, derived from the registry of job kinds.

Each kind lists the params it shows (core.kinds.JobKind.form); their inputs come from the
params model's JSON schema: an enum is a select, a boolean a checkbox, a number a number
field with the model's bounds. A new param or kind needs no template change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.kinds import KINDS, JobKind


@dataclass(frozen=True)
class Input:
    name: str
    label: str
    widget: str  # select | checkbox | number | text
    value: Any = None
    options: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    # "list": the value is sent as a one-item list; "number": as a number (see app.js).
    send_as: str = "text"
    help: str = ""


@dataclass(frozen=True)
class JobForm:
    kind: str
    title: str
    help: str
    inputs: tuple[Input, ...]


def _input(name: str, schema: dict[str, Any]) -> Input:
    label = schema.get("title", name)
    help_text = schema.get("description", "")
    default = schema.get("default")
    # Optional values (lr: a number or unset) offer their non-null type with a blank default.
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    spec = {**schema, **options[0]} if options else schema
    if spec.get("type") == "array" and "enum" in spec.get("items", {}):
        choices = tuple(spec["items"]["enum"])
        first = default[0] if isinstance(default, list) and default else choices[0]
        return Input(name, label, "select", first, choices, send_as="list", help=help_text)
    if "enum" in spec:
        return Input(name, label, "select", default, tuple(spec["enum"]), help=help_text)
    if spec.get("type") == "boolean":
        return Input(name, label, "checkbox", bool(default), help=help_text)
    if spec.get("type") in ("integer", "number"):
        low = spec.get("minimum", spec.get("exclusiveMinimum"))
        return Input(
            name,
            label,
            "number",
            default,
            minimum=low,
            maximum=spec.get("maximum"),
            send_as="number",
            help=help_text,
        )
    return Input(name, label, "text", default, help=help_text)


def job_form(kind: JobKind) -> JobForm:
    properties = kind.params.model_json_schema()["properties"]
    inputs = tuple(_input(name, properties[name]) for name in kind.form)
    return JobForm(kind.name.value, kind.title, kind.params.__doc__ or "", inputs)


def job_forms() -> list[JobForm]:
    """The forms of every kind that has one, in the registry's order (the lesson's)."""
    return [job_form(kind) for kind in KINDS.values() if kind.form and kind.requestable]
