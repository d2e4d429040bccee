"""The package layout: imports flow down the layers declared in pyproject.toml ([tool.importlinter]),
and the registries name exactly what the config allows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, timeout=300)


def test_imports_flow_down_the_layers():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The bottom layer importing the toy world (the top) is reported, naming both modules."""
    shutil.copytree(REPO / "flash_exp", tmp_path / "flash_exp", ignore=shutil.ignore_patterns("assets", "__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with (tmp_path / "flash_exp" / "files.py").open("a") as f:
        f.write("\nimport flash_exp.toyworld.shapes  # noqa: E402,F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "flash_exp.files -> flash_exp.toyworld.shapes" in result.stdout


def test_the_registries_name_what_the_config_allows():
    from flash_exp.backbones import FAMILY_CLASSES
    from flash_exp.config import FAMILIES, TASKS
    from flash_exp.tasks import TASK_CLASSES

    assert tuple(FAMILY_CLASSES) == FAMILIES
    assert tuple(TASK_CLASSES) == TASKS
