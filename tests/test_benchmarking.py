"""The run header every benchmark JSON carries."""

from pathlib import Path

from sglang_dsv4_sparse.benchmarking import COMMIT_ENV, run_header

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
