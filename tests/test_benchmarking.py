"""The run header every benchmark JSON carries, and where that JSON goes."""

import json
from pathlib import Path

from sglang_dsv4_sparse.benchmarking import COMMIT_ENV, json_path, run_header, save_json

REPO = str(Path(__file__).resolve().parents[1])


def test_run_header_names_the_commit_the_caller_gives(monkeypatch):
    # A working tree copied to the GPU machine may carry a stale .git: the caller names the commit.
    monkeypatch.setenv(COMMIT_ENV, "abc1234")
    header = run_header(REPO, packages=("no-such-package-here",), note="x")
    assert header["commit"] == "abc1234"
    assert header["no-such-package-here"] == "?" and header["note"] == "x"
    assert {"gpu", "date", "torch", "triton"} <= set(header)


def test_run_header_reads_git_without_the_variable(monkeypatch):
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    assert run_header(REPO)["commit"]  # a short hash (maybe +dirty), or "?" without git


def test_json_goes_to_the_path_given_else_out_else_nowhere(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)  # the working directory, usually the repository root, gets nothing
    monkeypatch.delenv("OUT", raising=False)
    assert json_path("b.json") is None
    assert save_json("b.json", {"x": 1}) is None
    assert "b.json not saved: set OUT=DIR or pass --json FILE" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    assert save_json("b.json", {"x": 2}) == str(tmp_path / "out" / "b.json")
    assert json.loads((tmp_path / "out" / "b.json").read_text()) == {"x": 2}

    given = tmp_path / "new" / "dir" / "mine.json"
    assert save_json("b.json", {"x": 3}, str(given)) == str(given)  # --json wins over OUT
    assert json.loads(given.read_text()) == {"x": 3}
