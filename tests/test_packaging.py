"""The wheel carries the four packages and the templates (docs/architecture.md)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_packages_and_templates(tmp_path):
    source = tmp_path / "src"  # build from a copy: the checkout gets no build/ folder
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "demo", "*.egg-info", "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(source)], check=True, timeout=300,
                   capture_output=True)
    (wheel,) = tmp_path.glob("redteam-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("redteam/cli/__init__.py", "redteam/probes/knowledge.py",
                     "defenses/__init__.py", "hyperbolic/__init__.py", "reports/html.py",
                     "templates/report.html.j2", "templates/index.html.j2",
                     "templates/report.css"):
        assert required in names, required
    assert not [n for n in names if n.startswith("tests/")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "redteam = redteam.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
