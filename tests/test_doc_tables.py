"""Every generated table in README/docs equals what its script renders from committed raw output."""

from __future__ import annotations

import pytest

from benchmarks import doctables


def test_every_generated_block_matches_its_renderer():
    assert doctables.check_docs() == []


def test_replace_block_rewrites_only_its_own_block():
    text = "a\n<!-- generated:x -->\nold\n<!-- /generated:x -->\nb\n<!-- generated:y -->\nkeep\n<!-- /generated:y -->\n"
    out = doctables.replace_block(text, "x", "new")
    assert out == "a\n<!-- generated:x -->\nnew\n<!-- /generated:x -->\nb\n<!-- generated:y -->\nkeep\n<!-- /generated:y -->\n"
    with pytest.raises(KeyError):
        doctables.replace_block(text, "z", "new")


def test_drift_is_reported(tmp_path):
    @doctables.renderer("_probe_table")
    def _render():
        return doctables.table(["a", "b"], [[1, 2]])

    doc = tmp_path / "d.md"
    doc.write_text("<!-- generated:_probe_table -->\n| typed |\n<!-- /generated:_probe_table -->\n")
    assert doctables.check_docs([doc]) == ["d.md: block '_probe_table' differs from what its script renders"]
    doc.write_text(doctables.replace_block(doc.read_text(), "_probe_table", _render()))
    assert doctables.check_docs([doc]) == []


def test_a_whole_document_rewrite_keeps_other_scripts_blocks():
    old = "# old\n<!-- generated:x -->\nmine\n<!-- /generated:x -->\n<!-- generated:y -->\ntheirs\n<!-- /generated:y -->\n"
    new = "# new\n<!-- generated:x -->\nfresh\n<!-- /generated:x -->\n"
    out = doctables.carry_blocks(old, new)
    assert doctables.blocks(out) == {"x": "fresh\n", "y": "theirs\n"}
    assert out.startswith("# new\n") and doctables.carry_blocks("# no blocks\n", new) == new
