"""The isolation harness itself: a crash, a wrong error and a wrong return are each reported, by case."""

import os
import signal

import pytest


def _segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


def _raise(exc):
    raise exc


def test_crashes_and_wrong_outcomes_are_failures_naming_the_case(cases):
    cases.returns("fine", lambda: None)
    cases.raises("right error", lambda: _raise(ValueError("token_ids must be 1-D")), ValueError, "token_ids")
    cases.returns("crash", _segfault)
    cases.raises("wrong type", lambda: _raise(TypeError("token_ids")), ValueError, "token_ids")
    cases.raises("wrong name", lambda: _raise(ValueError("something")), ValueError, "token_ids")
    cases.raises("no error", lambda: None, ValueError, "token_ids")
    cases.returns("unexpected error", lambda: _raise(RuntimeError("boom")))
    cases.returns("flag is set", lambda: _raise(AssertionError()) if os.environ["SGLANG_DSV4_SPARSE_CHECK_BOUNDS"] != "1" else None, bounds=True)
    with pytest.raises(pytest.fail.Exception) as failed:
        cases.run()
    lines = str(failed.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "crash", "wrong type", "wrong name", "no error", "unexpected error"
    ]
    assert "SIGSEGV" in lines[0]
