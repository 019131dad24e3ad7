"""BENCHMARKS.md is what scripts/benchmarks_md.py prints from benchmarks/results/ (CPU only).

Each benchmark script prints its table from the saved JSON (``--from-json FILE
--markdown``); a hand edit of a figure, or a JSON changed without regenerating
the file, fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmarks_md_matches_the_saved_json():
    done = subprocess.run([sys.executable, "scripts/benchmarks_md.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"regenerate: python scripts/benchmarks_md.py > BENCHMARKS.md\n{done.stdout}{done.stderr}"


def test_every_table_sits_under_a_run_line():
    text = (ROOT / "BENCHMARKS.md").read_text()
    # Short enough to read in one go: section 4's A/B is one compact line per (heads, chunk, requests).
    assert len(text.splitlines()) < 400
    for section in text.split("\n## ")[1:]:
        if "| --- |" in section:
            before_table = section[: section.index("| --- |")]
            assert "\nRun: " in before_table, section.splitlines()[0]
