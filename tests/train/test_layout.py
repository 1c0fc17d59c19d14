"""The training packages import only downward: phantom <- data <- fit <- evaluate, and export builds on fit.

A newcomer reads the pipeline in the folders; an upward import (or one from train into export) would make
that layout lie and bring back the train <-> export cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What each training subpackage may import of its siblings (besides itself and litseg.runtime).
ALLOWED = {
    "phantom": set(),
    "data": {"phantom"},
    "fit": {"data"},
    "evaluate": {"data", "fit"},
}


def _imported_train_subpackages(path: Path) -> set[str]:
    """The train subpackages (or 'export') a module imports, absolute or relative."""
    package = path.relative_to(ROOT / "train").parts[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 2:
                found.add(module.split(".")[0] or node.names[0].name)
            elif module.startswith("litseg.train."):
                found.add(module.split(".")[2])
            elif module.startswith("litseg.export"):
                found.add("export")
        elif isinstance(node, ast.Import):
            found |= {"export" for alias in node.names if alias.name.startswith("litseg.export")}
    return found - {package}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_training_subpackages_import_only_downward(package: str) -> None:
    modules = sorted((ROOT / "train" / package).glob("*.py"))
    assert modules, f"train/{package}/ has no modules"
    for path in modules:
        extra = _imported_train_subpackages(path) - ALLOWED[package]
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)} (allowed: {sorted(ALLOWED[package])})"


def test_every_subpackage_says_what_it_may_import() -> None:
    for package in ALLOWED:
        doc = ast.get_docstring(ast.parse((ROOT / "train" / package / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"train/{package}/__init__.py: no docstring naming its imports"


def test_train_has_no_flat_modules_beyond_the_launchers() -> None:
    flat = sorted(p.name for p in (ROOT / "train").glob("*.py"))
    assert flat == ["__init__.py", "launch.py"]
