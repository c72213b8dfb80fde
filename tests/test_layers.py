"""The library's layout rule (CONTRIBUTING.md, "Where code goes"), checked on the real import graph."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """core imports nothing above it; nn and data only core; methods below papers; a chapter's module
    never imports another chapter's module or the tools; the tools never import a chapter's module."""
    pytest.importorskip("importlinter")
    from importlinter.cli import lint_imports
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0, "see the broken contract printed above"


def test_every_chapter_module_is_named_after_a_notebook():
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb") if not p.name.startswith("_")}
    modules = {p.stem.replace("_", "-") for p in (ROOT / "lib" / "papers").glob("*.py") if p.stem != "__init__"}
    assert modules <= notebooks, f"modules under lib/papers with no chapter: {sorted(modules - notebooks)}"


def test_tests_mirror_the_layout():
    """tests/<layer>/test_<module>.py for the library's layers; tests/papers/test_<chapter>.py per chapter module."""
    for layer in ("core", "nn", "data", "methods", "papers", "tools"):
        for test in (ROOT / "tests" / layer).glob("test_*.py"):
            stem = test.stem[len("test_"):]
            modules = {p.stem for p in (ROOT / "lib" / layer).glob("*.py")}
            assert any(stem == m or stem.startswith(m + "_") for m in modules), \
                f"{test.relative_to(ROOT)} tests no module of lib/{layer} (its name must start with one)"
    for module in (ROOT / "lib" / "papers").glob("*.py"):
        if module.stem != "__init__":
            assert (ROOT / "tests" / "papers" / f"test_{module.stem}.py").exists(), f"no tests for {module.stem}"
