"""Every ``modalscope train`` flag combination the README shows is valid on its own.

Each inline snippet and code-block line with ``--set`` or ``--dataset`` is parsed by the real
``train`` parser and resolved to a RunConfig (no training): a snippet that only works
together with flags from elsewhere on the page fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from modalscope.cli import build_parser, config_from_args

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        out += [ln.split("#")[0].strip() for ln in block.splitlines() if " train " in ln and "--resume" not in ln]
    inline = re.sub(r"```.*?```", "", text, flags=re.S)
    out += [s for s in re.findall(r"`([^`\n]+)`", inline) if s.lstrip().startswith("--") and ("--set" in s or "--dataset" in s)]
    return [s for s in out if not any(p in s for p in PLACEHOLDERS)]


PLACEHOLDERS = ("<", "...", "dotted.key", "FILE")  # syntax descriptions, not commands


def test_the_readme_has_train_snippets():
    assert len(_snippets()) >= 3


@pytest.mark.parametrize("snippet", _snippets())
def test_readme_snippet_resolves_to_a_config(snippet, tmp_path):
    words = shlex.split(snippet)
    if "train" in words:
        words = words[words.index("train") + 1 :]
    args = build_parser().parse_args(["train", *words])
    config_from_args(args)  # raises a one-line ConfigError for a bad or incomplete snippet
