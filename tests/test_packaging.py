"""Installing ModalScope adds exactly one import package, ``modalscope`` (plus its console script)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("modalscope-*.whl")
    return whl


def test_wheel_has_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"modalscope"}
    info = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(info).decode().split() == ["modalscope"]


def test_wheel_holds_every_source_module(wheel):
    """Every .py under core/ and dashboard/ is in the wheel at its mapped path (nothing left out)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {"modalscope/" + p.relative_to(ROOT / "core").as_posix() for p in (ROOT / "core").rglob("*.py") if "__pycache__" not in p.parts}
    want |= {"modalscope/dashboard/" + p.relative_to(ROOT / "dashboard").as_posix() for p in (ROOT / "dashboard").rglob("*.py") if "__pycache__" not in p.parts}
    assert want - names == set()


def test_wheel_declares_the_console_script(wheel):
    z = zipfile.ZipFile(wheel)
    ep = z.read(next(n for n in z.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "modalscope = modalscope.cli:main" in ep


def test_installed_import_name_is_modalscope_and_core_is_not_a_package():
    code = "import importlib.util as u, modalscope, modalscope.dashboard; print(u.find_spec('modalscope.store') is not None)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert r.stdout.strip() == "True", r.stderr[-1000:]
    r = subprocess.run([sys.executable, "-c", "import core"], capture_output=True, text=True, cwd="/", timeout=120)
    assert r.returncode != 0 and "No module named 'core'" in r.stderr
