"""The docs and the code stand on their own: no citation of material outside the repository."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_nothing_cites_the_shared_reference_notes():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "core").rglob("*.py"), *(ROOT / "dashboard").rglob("*.py")]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if "shared/methods.md" in line or "methods.md §" in line or "design.md" in line or "anchors.md" in line]
    assert hits == []
