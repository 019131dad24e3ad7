"""Timing helpers shared by the benchmark scripts (GPU only).

Two clocks, both medians of CUDA-event timings:

* ``graph_ms``: ``triton.testing.do_bench_cudagraph``, many calls captured in one
  CUDA graph and replayed. Host overhead (Python wrappers, launches) is gone,
  so this is the GPU time of the kernels. Callers rotate among input sets
  several times the L2 so rows are not L2-resident.
* ``median_ms``: ``triton.testing.do_bench``, one eager call at a time after an
  L2 flush. It includes host time when the host is the slower side, and the
  flush leaves the L2 full of dirty lines whose write-back lands inside the
  next timed call: a penalty of up to ~50 MB of traffic that weighs on short
  kernels. Reported beside the graph time for comparison.

Plus the device-to-device copy bandwidth measured in the same run as the
ceiling, a plain-text and a Markdown table printer, the run header each
script saves with its JSON (``scripts/benchmarks_md.py`` prints BENCHMARKS.md
from those files), where that JSON goes (``save_json``), and the exit status
of a script that finds no GPU (``no_gpu``, ``EXIT_NO_GPU``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

import torch


# The exit status of a script that needs a GPU and sees none: the same as the shell
# scripts' DSV4_EXIT_NO_GPU (scripts/_common.sh). Not 2, argparse's usage error.
EXIT_NO_GPU = 4


def no_gpu(prog: str, hint: str = "") -> int:
    """Say on stderr that ``prog`` needs a CUDA GPU and sees none (``hint`` follows); returns
    :data:`EXIT_NO_GPU`, the script's exit status."""
    print(f"{prog}: error: no GPU visible: needs a CUDA GPU{hint}", file=sys.stderr)
    return EXIT_NO_GPU


def median_ms(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 200) -> float:
    """Median milliseconds of ``fn`` (CUDA events; L2 flushed between runs by do_bench)."""
    from triton.testing import do_bench

    torch.cuda.synchronize()
    return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def events_ms(fn: Callable[[], object], reps: int = 10) -> float:
    """Median milliseconds of ``reps`` single calls of ``fn`` after one warm-up call (CUDA events; the
    host clock on a CPU). For calls too long, or too stateful, for do_bench's many repetitions."""
    fn()
    cuda = torch.cuda.is_available()
    times = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def graph_ms(fn: Callable[[], object], rep_ms: float = 100) -> float:
    """Median milliseconds per call of ``fn`` replayed from a CUDA graph."""
    from triton.testing import do_bench_cudagraph

    # do_bench_cudagraph runs fn on a new stream: inputs still being written on
    # the default stream (a randperm of ids) must be finished first.
    torch.cuda.synchronize()
    return float(do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))


def copy_bandwidth_tbps(num_bytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth, bytes read plus written, in TB/s."""
    src = torch.empty(num_bytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    # Eager: a memcpy captured in a CUDA graph becomes a copy-engine node, which
    # measured well under the SM copy kernel on an H200 (docs/design-notes.md,
    # "How the benchmarks measure"). At 4 GB a call, do_bench's flush and host
    # time are small beside it.
    ms = median_ms(lambda: dst.copy_(src))
    del src, dst
    torch.cuda.empty_cache()
    return 2 * num_bytes / (ms * 1e-3) / 1e12


def device_summary() -> str:
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n== {title}")
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """``print_table``'s table as Markdown lines (floats formatted alike)."""
    lines = ["| " + " | ".join(str(c) for c in headers) + " |", "|" + " --- |" * len(headers)]
    return lines + ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]


COMMIT_ENV = "SGLANG_DSV4_SPARSE_COMMIT"


def run_header(repo_dir: str, packages: Sequence[str] = (), **extra: object) -> dict:
    """What a benchmark ran on, saved with its JSON: GPU, date (UTC), torch and Triton versions, commit.

    ``commit`` is ``$SGLANG_DSV4_SPARSE_COMMIT`` where set (for a working tree
    copied to another machine with a stale ``.git``: the caller names the
    commit it copied), else ``git rev-parse --short HEAD`` in ``repo_dir``
    (``+dirty`` when tracked files differ from it, ``?`` without git).  Each of
    ``packages`` adds its installed version; ``extra`` is stored as given.
    """
    from importlib.metadata import version

    import triton

    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = os.environ.get(COMMIT_ENV, "").strip()
    if not commit:
        commit = git("rev-parse", "--short", "HEAD") or "?"
        if commit != "?" and git("status", "--porcelain", "--untracked-files=no"):
            commit += "+dirty"
    header = dict(
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        date=time.strftime("%Y-%m-%d", time.gmtime()),
        torch=torch.__version__,
        triton=triton.__version__,
        commit=commit,
    )
    for name in packages:
        try:
            header[name] = version(name)
        except Exception:  # not installed, or no metadata
            header[name] = "?"
    header.update(extra)
    return header


def header_line(header: Optional[dict]) -> str:
    """A saved run header as one line of BENCHMARKS.md (its ``note``, if any, after it)."""
    if not header:
        return "Run header: not recorded in this JSON."
    text = f"{header['gpu']}, {header['date']}, torch {header['torch']}, Triton {header['triton']}"
    if header.get("sglang"):
        text += f", SGLang {header['sglang']}"
    text += f", commit {header['commit']}."
    return f"Run: {text}" + (f" {header['note']}" if header.get("note") else "")


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.3g}" if abs(c) < 100 else f"{c:.0f}"
    return str(c)


def json_path(name: str, path: Optional[str] = None) -> Optional[str]:
    """Where a benchmark script's JSON goes: ``path`` (its ``--json FILE``) when given, else
    ``$OUT/name`` when OUT is set (the device tool's output folder, or what ``scripts/gpu_check.sh``
    sets), else None: not saved. Never the working directory, usually the repository root."""
    if path:
        return path
    out = os.environ.get("OUT")
    return os.path.join(out, name) if out else None


def save_json(name: str, payload: object, path: Optional[str] = None) -> Optional[str]:
    """Write ``payload`` where :func:`json_path` says (its folder made if missing); returns that path,
    or None after a note on stderr when there is none."""
    dest = json_path(name, path)
    if dest is None:
        print(f"{name} not saved: set OUT=DIR or pass --json FILE", file=sys.stderr)
        return None
    folder = os.path.dirname(dest)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(dest, "w") as f:
        json.dump(payload, f, indent=1, default=str)
    return dest
