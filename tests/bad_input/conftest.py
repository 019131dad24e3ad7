"""Bad-input cases run in forked children, so a crash is a failed case, not the end of the run.

A test adds cases to the ``cases`` fixture, each with the outcome the API
documents: a clear error (exception type and a pattern naming the argument)
or a return, whose masked result the case's own function asserts. ``run()``
forks one child for all of them (forking after torch and Triton are imported
costs milliseconds); the child reports each case as it starts and ends, so a
case that kills the child (a segfault) or hangs it is named, and the cases
after it run in a fresh child.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import re
import signal
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Type

import pytest
import torch

FLAG = "SGLANG_DSV4_SPARSE_CHECK_BOUNDS"
# Generous for a 2-core machine running the interpreter; a hang is a failure.
CHILD_TIMEOUT_S = 120


@dataclass
class Case:
    name: str
    fn: Callable[[], object]
    raises: Optional[Type[BaseException]]  # None: must return (fn asserts what it returned)
    match: Optional[str]  # pattern the message must hold: the argument's name
    bounds: bool  # run under SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1


def _verdict(case: Case) -> Optional[str]:
    """None when the case behaved as documented, otherwise what it did instead."""
    os.environ[FLAG] = "1" if case.bounds else "0"
    try:
        case.fn()
    except Exception as err:  # noqa: BLE001 - every exception is a verdict here
        got = f"{type(err).__name__}: {err}"
        if case.raises is None:
            return f"raised {got}"
        if not isinstance(err, case.raises):
            return f"raised {got}; expected {case.raises.__name__}"
        if case.match is not None and not re.search(case.match, str(err)):
            return f"raised {got}; the message does not match {case.match!r}"
        return None
    if case.raises is not None:
        return f"returned; expected {case.raises.__name__} matching {case.match!r}"
    return None


def _child(conn, cases: List[Case]) -> None:
    # The parent's OpenMP pool does not survive fork: a parallel region in the
    # child would wait forever for its threads. One thread runs inline.
    torch.set_num_threads(1)
    # A crash is reported by the parent, by case; pytest's fault handler would
    # also print the child's stack past the output capture.
    faulthandler.disable()
    for i, case in enumerate(cases):
        conn.send(("start", i))
        conn.send(("end", i, _verdict(case)))
    conn.close()


def _died(exitcode: Optional[int]) -> str:
    if exitcode is None:
        return f"hung (killed after {CHILD_TIMEOUT_S} s)"
    if exitcode < 0:
        return f"killed the process with {signal.Signals(-exitcode).name}"
    return f"ended the process with exit status {exitcode}"


def run_isolated(cases: List[Case]) -> List[str]:
    """Run every case in forked children; returns one line per case that misbehaved."""
    ctx = multiprocessing.get_context("fork")
    failures: List[str] = []
    todo = list(cases)
    while todo:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(send, todo), daemon=True)
        proc.start()
        send.close()
        current, finished = None, 0
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        hung = False
        while True:
            if not recv.poll(max(0.0, deadline - time.monotonic())):
                hung = True
                proc.kill()
                break
            try:
                msg = recv.recv()
            except EOFError:
                break
            if msg[0] == "start":
                current = msg[1]
            else:
                _, i, verdict = msg
                if verdict is not None:
                    failures.append(f"{todo[i].name}{' [bounds flag]' if todo[i].bounds else ''}: {verdict}")
                current, finished = None, i + 1
        proc.join()
        recv.close()
        if current is None and not hung and proc.exitcode == 0:
            break
        if current is None:
            # Died between cases: nothing to blame but the harness; stop here.
            failures.append(f"the child {_died(None if hung else proc.exitcode)} after {finished} cases")
            break
        case = todo[current]
        failures.append(f"{case.name}{' [bounds flag]' if case.bounds else ''}: {_died(None if hung else proc.exitcode)}")
        todo = todo[current + 1 :]
    return failures


class Cases:
    """What a test declares: ``raises(...)`` and ``returns(...)`` cases, then ``run()``."""

    def __init__(self) -> None:
        self._cases: List[Case] = []
        self.ran = False

    def raises(self, name: str, fn: Callable[[], object], exc: Type[BaseException], match: str, *, bounds: bool = False) -> None:
        self._cases.append(Case(name, fn, exc, match, bounds))

    def returns(self, name: str, fn: Callable[[], object], *, bounds: bool = False) -> None:
        self._cases.append(Case(name, fn, None, None, bounds))

    def run(self) -> None:
        self.ran = True
        names = [(c.name, c.bounds) for c in self._cases]
        assert len(set(names)) == len(names), "case names must be unique"
        failures = run_isolated(self._cases)
        if failures:
            pytest.fail(f"{len(failures)} of {len(self._cases)} cases misbehaved:\n  " + "\n  ".join(failures), pytrace=False)


@pytest.fixture
def cases():
    if torch.cuda.is_available():
        # The cases use CPU tensors under the interpreter, which a CUDA run
        # does not set up, and a forked child cannot use CUDA after its parent.
        pytest.skip("bad-input cases run on the CPU (Triton interpreter); this run is on CUDA")
    declared = Cases()
    yield declared
    assert declared.ran, "the test declared cases but never called cases.run()"
