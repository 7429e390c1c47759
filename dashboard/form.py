"""Widgets generated from pydantic config classes (the Launch form is RunConfig, rendered).

Each field becomes a widget chosen by its type: a ``Literal`` a select box, a ``bool`` a
toggle, an ``int``/``float`` a number box, anything else (optional dicts and lists) a YAML
text box where empty means "default". Number boxes carry no min/max on purpose: the
allowed range is in the help text and out-of-range values reach ``RunConfig``, whose
one-line error is shown inline — the same message the CLI prints.
"""

from __future__ import annotations

import typing
from typing import Any, Literal, get_args, get_origin

import streamlit as st
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from modalscope.errors import ConfigError


def _bounds(info: FieldInfo) -> str:
    parts = []
    for m in info.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "min length")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
    return ", ".join(parts)


def field_help(info: FieldInfo) -> str:
    desc = info.description or ""
    b = _bounds(info)
    return f"{desc} ({b})" if b else desc


def _strip_optional(ann: Any) -> tuple[Any, bool]:
    if get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return ann, False


def field_widget(section: str, name: str, info: FieldInfo, choices: list[str] | None = None, container=None,
                 label: str | None = None, help_prefix: str = "") -> tuple[bool, Any]:
    """Render one field; returns (given, value) — ``given`` False means "leave at default"."""
    c = container or st
    key = f"launch.{section}.{name}"
    ann, optional = _strip_optional(info.annotation)
    default = info.get_default(call_default_factory=True)
    if default is PydanticUndefined:  # a required field (e.g. a data path): start empty
        default, optional = None, True
    label = label or name.replace("_", " ")
    helptext = (help_prefix + " " + field_help(info)).strip()
    if choices:
        opts = list(choices)
        idx = opts.index(default) if default in opts else 0
        return True, c.selectbox(label, opts, index=idx, key=key, help=helptext)
    if get_origin(ann) is Literal:
        opts = list(get_args(ann))
        return True, c.selectbox(label, opts, index=opts.index(default) if default in opts else 0, key=key, help=helptext)
    if ann is bool:
        return True, c.toggle(label, value=bool(default), key=key, help=helptext)
    if ann is int and not optional:
        return True, int(c.number_input(label, value=int(default), step=1, key=key, help=helptext))
    if ann is float and not optional:
        return True, float(c.number_input(label, value=float(default), step=None, format="%g", key=key, help=helptext))
    if ann is str:
        text = c.text_input(label, value=str(default or ""), key=key, help=helptext)
        return (False, None) if optional and text == "" else (True, text)
    text = c.text_input(label, value="" if default is None else yaml.safe_dump(default, default_flow_style=True).strip(), key=key,
                        placeholder="default (from the preset)" if default is None else None,
                        help=(helptext + " — YAML, e.g. {audio: 16, visual: 24}; empty = default").strip(" —"))
    if text.strip() == "":
        return False, None
    try:
        return True, yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"config error: {section.split('.')[0]}.{name}: not valid YAML ({text[:40]!r})") from None


def model_widgets(section: str, model: type[BaseModel], skip: tuple[str, ...] = ("name",), columns: int = 3,
                  choices: dict[str, list[str]] | None = None,
                  labels: dict[str, tuple[str, str]] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Widgets for every field of ``model`` in a grid; returns (values given, YAML errors).
    ``labels``: field → (label, help sentence put before the field's own help)."""
    out: dict[str, Any] = {}
    errors: list[str] = []
    fields = [(n, f) for n, f in model.model_fields.items() if n not in skip]
    cols = st.columns(columns)
    for i, (n, f) in enumerate(fields):
        try:
            lab, pre = (labels or {}).get(n, (None, ""))
            given, v = field_widget(section, n, f, (choices or {}).get(n), cols[i % columns], label=lab, help_prefix=pre)
        except ConfigError as e:
            errors.append(str(e))
            continue
        if given:
            out[n] = v
    return out, errors
