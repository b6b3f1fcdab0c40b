"""The wheel holds what the packages read at run time: every tracked file under them (the
SQL of migrations, functions and queries, the bench's Node peer and results), and the
compiled fan-out loop where a C compiler is."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("db", "bridge", "api", "courtside", "bench")


def checkout() -> list[str]:
    """The files of the checkout as git sees them (tracked, or new and not ignored)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [name for name in out.splitlines() if (ROOT / name).is_file()]


def test_the_wheel_holds_every_file_of_the_packages(tmp_path: Path) -> None:
    # Built from a copy: in the checkout, setuptools would also take whatever an earlier
    # build listed in courtside.egg-info, and pass where a fresh clone's build would not.
    source = tmp_path / "src"
    everything = checkout()
    for name in everything:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    files = [name for name in everything
             if name.split("/")[0] in PACKAGES and not name.endswith(".gitignore")]
    assert any(name.endswith(".sql") for name in files)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(source)], capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("courtside-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in files if name not in names] == []
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is not None:
        assert any(n.startswith("bridge/_fanout.") and n.endswith(".so") for n in names)
