"""Compare GPU kernel time between two PyTorch profiler traces.

    dsv4-kernel-diff profiles/baseline profiles/dsv4_sparse --stage extend
    python -m sglang_dsv4_sparse.tools.kernel_diff A B --json

A and B are Chrome trace JSON files (plain or .gz) or directories of
per-rank traces, which are summed over ranks.  A directory that only holds
run subdirectories (SGLang writes ``<output_dir>/<timestamp>/``) resolves to
its newest run.  B is the candidate: deltas are B - A, speedup is A / B.

Kernels are grouped by name and classified as only in A, only in B, changed
launch count, or same count with a wall change over both thresholds; the
rest is "below threshold".  The accounting section adds those parts up to
the total kernel-wall delta exactly (durations are summed in integer ns).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

from sglang_dsv4_sparse.tools.trace_reader import (
    TraceError,
    TraceStats,
    find_trace_files,
    read_trace_file,
)

PROG = "dsv4-kernel-diff"
# Below this much input the parse is over before a progress bar helps.
PROGRESS_MIN_BYTES = 32 << 20

CATEGORIES = ("only_in_a", "only_in_b", "changed_count", "changed_wall", "below_threshold")
CATEGORY_TITLES = {
    "only_in_a": "Only in A (removed)",
    "only_in_b": "Only in B (added)",
    "changed_count": "Changed launch count",
    "changed_wall": "Same launch count, changed wall",
    "below_threshold": "Below threshold",
}


class CliError(Exception):
    """A user error; main() prints it and exits with status 2."""


# --------------------------------------------------------------------------
# Kernel names
# --------------------------------------------------------------------------

_OPERATOR = re.compile(r"operator\s*(?:<<=|>>=|<=>|<<|>>|<=|>=|<|>|->\*|->)")


def strip_template_args(name: str) -> str:
    """Drop ``<...>`` template argument lists from a demangled kernel name.

    ``operator<`` and friends and ``->`` are not brackets.  An unbalanced
    name is returned unchanged rather than mangled further.
    """
    out = []
    depth = 0
    i = 0
    n = len(name)
    while i < n:
        c = name[i]
        if (
            depth == 0
            and c == "o"
            and name.startswith("operator", i)
            and (i == 0 or not (name[i - 1].isalnum() or name[i - 1] == "_"))
        ):
            m = _OPERATOR.match(name, i)
            if m:
                out.append(m.group())
                i = m.end()
                continue
        if c == "-" and name.startswith("->", i):
            if depth == 0:
                out.append("->")
            i += 2
            continue
        if c == "<":
            depth += 1
        elif c == ">" and depth:
            depth -= 1
        elif depth == 0:
            out.append(c)
        i += 1
    if depth:
        return name
    return " ".join("".join(out).split())


def normalise_name(name: str, strip_templates: bool = False) -> str:
    """One spelling per kernel: collapsed whitespace, optionally no templates."""
    name = " ".join(name.split())
    return strip_template_args(name) if strip_templates else name


def normalise_kernels(kernels: dict, strip_templates: bool) -> dict:
    merged = {}
    for name, (count, ns) in kernels.items():
        key = normalise_name(name, strip_templates)
        entry = merged.get(key)
        if entry is None:
            merged[key] = [count, ns]
        else:
            entry[0] += count
            entry[1] += ns
    return merged


# --------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------


def _us(ns: int) -> float:
    return ns / 1000.0


def _side_summary(arg: str, stats: TraceStats, kernels: dict, comm_re) -> dict:
    wall = sum(ns for _, ns in kernels.values())
    comm = sum(ns for name, (_, ns) in kernels.items() if comm_re.search(name))
    return {
        "path": arg,
        "files": list(stats.files),
        "num_files": len(stats.files),
        "total_events": stats.total_events,
        "kernel_launches": sum(c for c, _ in kernels.values()),
        "distinct_kernels": len(kernels),
        "kernel_wall_ns": wall,
        "kernel_wall_us": _us(wall),
        "comm_wall_ns": comm,
        "comm_wall_us": _us(comm),
        "non_comm_wall_ns": wall - comm,
        "non_comm_wall_us": _us(wall - comm),
        "skipped_kernel_events": stats.skipped_kernels,
        "notes": list(stats.notes),
    }


def _ratio(a: int, b: int) -> Optional[float]:
    return a / b if b else None


def classify(count_a, count_b, wall_a, wall_b, min_delta_ns, min_rel_delta) -> str:
    if count_b == 0:
        return "only_in_a"
    if count_a == 0:
        return "only_in_b"
    if count_a != count_b:
        return "changed_count"
    delta = abs(wall_b - wall_a)
    rel_ok = wall_a == 0 or delta / abs(wall_a) >= min_rel_delta
    if delta > 0 and delta >= min_delta_ns and rel_ok:
        return "changed_wall"
    return "below_threshold"


def diff_stats(
    a_arg: str,
    a: TraceStats,
    b_arg: str,
    b: TraceStats,
    *,
    min_delta_us: float = 10.0,
    min_rel_delta: float = 0.02,
    comm_regex: str = "nccl",
    strip_templates: bool = False,
) -> dict:
    """The full comparison as a JSON-ready dict (ns fields are exact ints)."""
    comm_re = re.compile(comm_regex, re.IGNORECASE)
    ka = normalise_kernels(a.kernels, strip_templates)
    kb = normalise_kernels(b.kernels, strip_templates)
    side_a = _side_summary(a_arg, a, ka, comm_re)
    side_b = _side_summary(b_arg, b, kb, comm_re)
    min_delta_ns = round(min_delta_us * 1000)

    groups = {cat: [] for cat in CATEGORIES}
    for name in ka.keys() | kb.keys():
        count_a, wall_a = ka.get(name, (0, 0))
        count_b, wall_b = kb.get(name, (0, 0))
        delta = wall_b - wall_a
        cat = classify(count_a, count_b, wall_a, wall_b, min_delta_ns, min_rel_delta)
        groups[cat].append(
            {
                "name": name,
                "comm": bool(comm_re.search(name)),
                "count_a": count_a,
                "count_b": count_b,
                "wall_a_ns": wall_a,
                "wall_b_ns": wall_b,
                "delta_ns": delta,
                "wall_a_us": _us(wall_a),
                "wall_b_us": _us(wall_b),
                "delta_us": _us(delta),
                "rel_delta": (delta / wall_a) if wall_a else None,
            }
        )

    categories = {}
    for cat, rows in groups.items():
        rows.sort(key=lambda r: (-abs(r["delta_ns"]), r["name"]))
        delta = sum(r["delta_ns"] for r in rows)
        categories[cat] = {
            "kernels": len(rows),
            "launches_a": sum(r["count_a"] for r in rows),
            "launches_b": sum(r["count_b"] for r in rows),
            "wall_a_ns": sum(r["wall_a_ns"] for r in rows),
            "wall_b_ns": sum(r["wall_b_ns"] for r in rows),
            "delta_ns": delta,
            "delta_us": _us(delta),
            "rows": rows,
        }

    total_delta = side_b["kernel_wall_ns"] - side_a["kernel_wall_ns"]
    accounting = {f"{cat}_ns": categories[cat]["delta_ns"] for cat in CATEGORIES}
    accounting["total_delta_ns"] = total_delta
    # Holds by construction (every kernel lands in exactly one category);
    # asserted so a future edit cannot silently break the report's promise.
    assert sum(categories[c]["delta_ns"] for c in CATEGORIES) == total_delta

    return {
        "a": side_a,
        "b": side_b,
        "delta": {
            "kernel_launches": side_b["kernel_launches"] - side_a["kernel_launches"],
            "kernel_wall_ns": total_delta,
            "kernel_wall_us": _us(total_delta),
            "non_comm_wall_ns": side_b["non_comm_wall_ns"] - side_a["non_comm_wall_ns"],
            "non_comm_wall_us": _us(side_b["non_comm_wall_ns"] - side_a["non_comm_wall_ns"]),
            "comm_wall_ns": side_b["comm_wall_ns"] - side_a["comm_wall_ns"],
            "comm_wall_us": _us(side_b["comm_wall_ns"] - side_a["comm_wall_ns"]),
        },
        "speedup": {
            "kernel_wall": _ratio(side_a["kernel_wall_ns"], side_b["kernel_wall_ns"]),
            "non_comm_wall": _ratio(side_a["non_comm_wall_ns"], side_b["non_comm_wall_ns"]),
        },
        "settings": {
            "min_delta_us": min_delta_us,
            "min_rel_delta": min_rel_delta,
            "comm_regex": comm_regex,
            "strip_templates": strip_templates,
        },
        "categories": categories,
        "accounting": accounting,
    }


# --------------------------------------------------------------------------
# Text report
# --------------------------------------------------------------------------


def fmt_us(ns: int, signed: bool = False) -> str:
    """Exact microseconds with ns digits, from integer ns (no float rounding)."""
    q, r = divmod(abs(ns), 1000)
    sign = "-" if ns < 0 else ("+" if signed else "")
    return f"{sign}{q:,}.{r:03d}"


def _fmt_speedup(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.3f}x"


def _comm_label(settings: dict) -> str:
    # "NCCL" for the default pattern; a custom one is shown as written.
    regex = settings["comm_regex"]
    return "NCCL" if regex == "nccl" else f"/{regex}/"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _short(name: str, width: int) -> str:
    if width and len(name) > width:
        return name[: width - 3] + "..."
    return name


def render_text(result: dict, top: int = 20, name_width: int = 100) -> str:
    a, b, d = result["a"], result["b"], result["delta"]
    s = result["settings"]
    lines = [
        f"A: {a['path']}  ({a['num_files']} trace file{'s' if a['num_files'] != 1 else ''})",
        f"B: {b['path']}  ({b['num_files']} trace file{'s' if b['num_files'] != 1 else ''})",
    ]
    for note in a["notes"] + b["notes"]:
        lines.append(f"  note: {note}")
    if a["num_files"] != b["num_files"]:
        lines.append("  note: A and B have different numbers of trace files; totals are sums over files")
    for side, label in ((a, "A"), (b, "B")):
        if side["skipped_kernel_events"]:
            lines.append(
                f"  note: {label}: {side['skipped_kernel_events']} kernel events without a name or duration were skipped"
            )
    comm = _comm_label(s)
    lines += [
        "",
        f"{'':<28}{'A':>20}{'B':>20}{'B - A':>20}",
        f"{'trace events':<28}{a['total_events']:>20,}{b['total_events']:>20,}"
        f"{b['total_events'] - a['total_events']:>+20,}",
        f"{'GPU kernel launches':<28}{a['kernel_launches']:>20,}{b['kernel_launches']:>20,}"
        f"{d['kernel_launches']:>+20,}",
        f"{'kernel wall (us)':<28}{fmt_us(a['kernel_wall_ns']):>20}{fmt_us(b['kernel_wall_ns']):>20}"
        f"{fmt_us(d['kernel_wall_ns'], True):>20}",
        f"{'  without ' + comm + ' (us)':<28}{fmt_us(a['non_comm_wall_ns']):>20}"
        f"{fmt_us(b['non_comm_wall_ns']):>20}{fmt_us(d['non_comm_wall_ns'], True):>20}",
        f"{'  ' + comm + ' kernels (us)':<28}{fmt_us(a['comm_wall_ns']):>20}"
        f"{fmt_us(b['comm_wall_ns']):>20}{fmt_us(d['comm_wall_ns'], True):>20}",
        "",
        f"speedup A/B: kernel wall {_fmt_speedup(result['speedup']['kernel_wall'])}, "
        f"without {comm} {_fmt_speedup(result['speedup']['non_comm_wall'])}",
    ]

    thresholds = f"|delta| >= {s['min_delta_us']:g} us and >= {s['min_rel_delta'] * 100:g}% of A"
    for cat in CATEGORIES[:-1]:
        group = result["categories"][cat]
        title = CATEGORY_TITLES[cat]
        if cat == "changed_wall":
            title += f" ({thresholds})"
        lines += [
            "",
            f"{title}: {_plural(group['kernels'], 'kernel')}, launches {group['launches_a']:,} -> "
            f"{group['launches_b']:,}, wall {fmt_us(group['wall_a_ns'])} -> "
            f"{fmt_us(group['wall_b_ns'])} us, delta {fmt_us(group['delta_ns'], True)} us",
        ]
        rows = group["rows"] if top <= 0 else group["rows"][:top]
        if rows:
            lines.append(f"  {'delta us':>16} {'A us':>16} {'B us':>16} {'A n':>8} {'B n':>8}  name")
        for r in rows:
            lines.append(
                f"  {fmt_us(r['delta_ns'], True):>16} {fmt_us(r['wall_a_ns']):>16} "
                f"{fmt_us(r['wall_b_ns']):>16} {r['count_a']:>8,} {r['count_b']:>8,}  "
                f"{_short(r['name'], name_width)}{'  [comm]' if r['comm'] else ''}"
            )
        hidden = group["rows"][len(rows):]
        if hidden:
            lines.append(
                f"  ... {len(hidden)} more, delta {fmt_us(sum(r['delta_ns'] for r in hidden), True)} us"
            )

    acc = result["accounting"]
    below = result["categories"]["below_threshold"]
    parts = [
        ("removed (only in A)", acc["only_in_a_ns"]),
        ("added (only in B)", acc["only_in_b_ns"]),
        ("changed launch count", acc["changed_count_ns"]),
        ("changed wall, same count", acc["changed_wall_ns"]),
        (f"below threshold ({_plural(below['kernels'], 'kernel')})", acc["below_threshold_ns"]),
    ]
    lines += ["", "Accounting of the kernel-wall delta B - A (us):"]
    for label, ns in parts:
        lines.append(f"  {label:<36}{fmt_us(ns, True):>20}")
    lines += [
        f"  {'':<36}{'-' * 20}",
        f"  {'total delta':<36}{fmt_us(acc['total_delta_ns'], True):>20}",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Chart
# --------------------------------------------------------------------------


def _import_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CliError(
            "argument --png: matplotlib is not installed; "
            "pip install matplotlib (the package's 'plot' extra)"
        ) from None
    try:
        matplotlib.use("Agg")  # headless: servers have no display
        import matplotlib.pyplot as plt
    except Exception as exc:  # a broken install (e.g. built against another numpy) fails here, not above
        raise CliError(f"argument --png: matplotlib is installed but cannot be used: {exc}") from None
    return plt


def write_png(result: dict, path: str, top: int = 20) -> None:
    """Horizontal bars of the largest per-kernel deltas (B - A, us)."""
    plt = _import_pyplot()
    tags = {
        "only_in_a": "only A",
        "only_in_b": "only B",
        "changed_count": "count",
        "changed_wall": "wall",
        "below_threshold": "small",
    }
    rows = [
        (r, cat)
        for cat in CATEGORIES
        for r in result["categories"][cat]["rows"]
        if r["delta_ns"] != 0
    ]
    rows.sort(key=lambda rc: -abs(rc[0]["delta_ns"]))
    rows = rows[: top if top > 0 else len(rows)]
    rows.reverse()  # barh draws bottom-up; largest at the top
    labels = [f"[{tags[cat]}] {_short(r['name'], 60)}" for r, cat in rows]
    values = [r["delta_us"] for r, _ in rows]
    colors = ["#2e7d32" if v < 0 else "#c62828" for v in values]

    fig, ax = plt.subplots(figsize=(12, 1.5 + 0.35 * max(1, len(rows))))
    ax.barh(range(len(rows)), values, color=colors)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("kernel wall delta B - A (us); negative = B faster")
    d = result["delta"]
    ax.set_title(
        f"total delta {fmt_us(d['kernel_wall_ns'], True)} us, "
        f"speedup A/B {_fmt_speedup(result['speedup']['kernel_wall'])} "
        f"(without {_comm_label(result['settings'])} "
        f"{_fmt_speedup(result['speedup']['non_comm_wall'])})",
        fontsize=10,
    )
    if not rows:
        ax.text(0.5, 0.5, "no kernel changed", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------


class Progress:
    """Byte progress on stderr: tqdm when installed, else a plain printer."""

    def __init__(self, total_bytes: int, enabled: bool = True):
        self.total = max(1, total_bytes)
        self.done = 0
        self.enabled = enabled and total_bytes >= PROGRESS_MIN_BYTES
        self._bar = None
        self._label = ""
        self._last_print = 0.0
        self._last_pct = -1
        self._tty = sys.stderr.isatty()
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=total_bytes,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            leave=False,
            desc="parsing traces",
        )

    def set_label(self, label: str) -> None:
        self._label = label
        if self._bar is not None:
            self._bar.set_description(label)

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(nbytes)
            return
        pct = min(100, int(self.done * 100 / self.total))
        now = time.monotonic()
        # A redirected stderr gets one line per 10%; a terminal a live line.
        if self._tty:
            if now - self._last_print < 0.5 and pct < 100:
                return
            end = "\r"
        else:
            if pct // 10 == self._last_pct // 10:
                return
            end = "\n"
        self._last_print = now
        self._last_pct = pct
        print(
            f"{self._label or 'parsing traces'}: {pct:3d}% "
            f"({self.done / (1 << 20):,.0f}/{self.total / (1 << 20):,.0f} MiB)",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self._tty:
            print(file=sys.stderr)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Compare GPU kernel time between two PyTorch profiler traces "
        "(B is the candidate: deltas are B - A, speedup is A / B).",
        epilog="A and B may be trace files (.json or .json.gz) or directories of "
        "per-rank traces (summed over ranks; a directory of run subdirectories "
        "uses its newest run). Exit status: 0 ok, 2 bad arguments or unreadable traces.",
    )
    p.add_argument("a", metavar="A", help="baseline trace file or directory")
    p.add_argument("b", metavar="B", help="candidate trace file or directory")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="rows per section in the text report and bars in --png (0 = all; default 20); --json always lists every kernel")
    p.add_argument("--min-delta-us", type=float, default=10.0, metavar="US",
                   help="smallest |wall delta| for a same-count kernel to count as changed (default 10)")
    p.add_argument("--min-rel-delta", type=float, default=0.02, metavar="FRAC",
                   help="smallest |wall delta| relative to A for the same (default 0.02 = 2%%)")
    p.add_argument("--strip-templates", action="store_true",
                   help="drop <...> template arguments from kernel names before grouping")
    p.add_argument("--comm-regex", default="nccl", metavar="REGEX",
                   help="case-insensitive pattern of communication kernels left out of the "
                   "'without' wall (default: nccl)")
    p.add_argument("--stage", choices=("extend", "decode"),
                   help="in directories, only read SGLang --profile-by-stage traces of this stage")
    p.add_argument("--glob", metavar="PATTERN",
                   help="in directories, only read files matching this pattern (default: *.json, *.json.gz)")
    p.add_argument("--strict", action="store_true",
                   help="decode every event (validates the whole JSON; slower)")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON dict instead of text")
    p.add_argument("--png", metavar="FILE", help="also write a bar chart of the largest deltas (needs matplotlib)")
    p.add_argument("--name-width", type=int, default=100, metavar="N",
                   help="truncate kernel names in the text report to N characters (0 = never; default 100)")
    p.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    return p


def _validate(args) -> None:
    if args.top < 0:
        raise CliError(f"argument --top: must be >= 0, got {args.top}")
    if args.min_delta_us < 0:
        raise CliError(f"argument --min-delta-us: must be >= 0, got {args.min_delta_us}")
    if args.min_rel_delta < 0:
        raise CliError(f"argument --min-rel-delta: must be >= 0, got {args.min_rel_delta}")
    try:
        re.compile(args.comm_regex)
    except re.error as exc:
        raise CliError(f"argument --comm-regex: invalid pattern {args.comm_regex!r}: {exc}") from None
    if args.png:
        _import_pyplot()  # fail before a long parse, not after
        parent = Path(args.png).resolve().parent
        if not parent.is_dir():
            raise CliError(f"argument --png: directory {parent} does not exist")


def _read_side(label: str, files, notes, args, progress: Progress) -> TraceStats:
    total = TraceStats()
    total.notes.extend(notes)
    for f in files:
        progress.set_label(f"{label}: {f.name}")
        try:
            total.merge(read_trace_file(f, strict=args.strict, on_bytes=progress.update))
        except TraceError as exc:
            raise CliError(f"argument {label}: {exc}") from None
        except OSError as exc:
            raise CliError(f"argument {label}: {f}: {exc.strerror or exc}") from None
    return total


def main(argv=None) -> int:
    """The ``dsv4-kernel-diff`` command; returns its exit status.

    A reader that stops early (``dsv4-kernel-diff --json | head``) ends it
    quietly with status 0, instead of a BrokenPipeError traceback.
    """
    try:
        status = _run(argv)
        sys.stdout.flush()  # inside the try: a short report may only meet the closed pipe here
        return status
    except BrokenPipeError:
        # Python flushes stdout once more at exit and would report the same error
        # there: point the descriptor at /dev/null first (the recipe in the docs
        # of Python's signal module).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _run(argv) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        _validate(args)
        resolved = {}
        for label, arg in (("A", args.a), ("B", args.b)):
            try:
                resolved[label] = find_trace_files(arg, pattern=args.glob, stage=args.stage)
            except TraceError as exc:
                raise CliError(f"argument {label}: {exc}") from None
        total_bytes = sum(
            os.path.getsize(f) for files, _ in resolved.values() for f in files
        )
        progress = Progress(total_bytes, enabled=not args.quiet)
        try:
            stats_a = _read_side("A", *resolved["A"], args, progress)
            stats_b = _read_side("B", *resolved["B"], args, progress)
        finally:
            progress.close()
        result = diff_stats(
            args.a,
            stats_a,
            args.b,
            stats_b,
            min_delta_us=args.min_delta_us,
            min_rel_delta=args.min_rel_delta,
            comm_regex=args.comm_regex,
            strip_templates=args.strip_templates,
        )
        if args.png:
            try:
                write_png(result, args.png, args.top)
            except OSError as exc:
                raise CliError(f"argument --png: cannot write {args.png}: {exc}") from None
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(result, top=args.top, name_width=args.name_width))
        if args.png:
            sys.stdout.write(f"\nwrote {args.png}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
