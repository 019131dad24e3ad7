"""The README's module map matches the tree: every module of the package, and every
file of benchmarks/, is in its tables, and everything the tables name exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sglang_dsv4_sparse"


def _tables() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(package rows, outside rows)``: (first cell, whole row) of the two tables under "What is in the package"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## What is in the package", 1)[1].split("\n## ", 1)[0]
    package_part, outside_part = section.split("Outside the package", 1)

    def rows(part: str) -> list[tuple[str, str]]:
        found = []
        for line in part.splitlines():
            cells = line.split("|")
            if len(cells) > 2 and "`" in cells[1]:
                found.append((cells[1], line))
        return found

    return rows(package_part), rows(outside_part)


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _modules() -> list[str]:
    """Dotted names of the package's modules (``__init__`` files excluded)."""
    return sorted(
        ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    )


def test_every_package_module_is_in_the_table():
    package_rows, _ = _tables()
    missing = []
    for module in _modules():
        parent, _, leaf = module.rpartition(".")
        listed = any(
            module in _ticked(first) or (parent and parent in _ticked(first) and leaf in _ticked(row))
            for first, row in package_rows
        )
        if not listed:
            missing.append(module)
    assert not missing, f"README's package table does not name: {missing}"


def test_every_name_in_the_package_table_exists():
    package_rows, _ = _tables()
    for first, _ in package_rows:
        for name in _ticked(first):
            path = PACKAGE.joinpath(*name.split("."))
            assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), name


def test_outside_table_matches_benchmarks_and_test_helpers():
    _, outside_rows = _tables()
    named = [name for first, _ in outside_rows for name in _ticked(first)]
    for name in named:
        assert (ROOT / name).exists(), name
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        if path.name != "__init__.py":
            assert path.relative_to(ROOT).as_posix() in named, path
    for path in sorted((ROOT / "tests" / "helpers").glob("*.py")):
        assert path.relative_to(ROOT).as_posix() in named, path
