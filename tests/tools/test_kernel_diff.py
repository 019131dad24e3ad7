"""dsv4-kernel-diff and its streaming trace reader, on small generated traces."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import types
from decimal import Decimal
from pathlib import Path

import pytest

from sglang_dsv4_sparse.tools import kernel_diff, trace_reader
from sglang_dsv4_sparse.tools.kernel_diff import main, strip_template_args
from sglang_dsv4_sparse.tools.trace_reader import TraceError, read_trace_file, read_traces

NCCL = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
LAMBDA = (
    "void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::"
    "launch_clamp_scalar(at::TensorIteratorBase&)::{lambda()#1}::operator()() const::"
    "{lambda(float)#1}, at::detail::Array<char*, 2> >(int, at::detail::Array<char*, 2>)"
)


# --------------------------------------------------------------------------
# Trace writers
# --------------------------------------------------------------------------


def kernel(name, dur, **extra):
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": 10.0, "dur": dur,
            "args": {"External id": 1, "grid": [132, 1, 1], "stream": 7}, **extra}


def cpu_op(name="aten::mm", dur=5.0):
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": 1, "ts": 1.0, "dur": dur,
            "args": {"Input Dims": [[2, 4], [4, 8]], "Input type": ["float", "float"]}}


def kineto_text(events) -> str:
    """Text laid out the way torch.profiler's export_chrome_trace writes it."""
    parts = []
    for ev in events:
        if ev.get("cat") == "kernel" and "args" in ev and list(ev)[:7] == [
            "ph", "cat", "name", "pid", "tid", "ts", "dur"
        ]:
            args = ",\n".join(f"      {json.dumps(k)}: {json.dumps(v)}" for k, v in ev["args"].items())
            parts.append(
                "  {\n"
                f'    "ph": "X", "cat": {json.dumps(ev["cat"])}, "name": {json.dumps(ev["name"])}, '
                f'"pid": {json.dumps(ev["pid"])}, "tid": {json.dumps(ev["tid"])},\n'
                f'    "ts": {ev["ts"]:.3f}, "dur": {ev["dur"]:.3f},\n'
                f'    "args": {{\n{args}\n    }}\n'
                "  }"
            )
        else:
            parts.append(json.dumps(ev, indent=4))
    return (
        '{\n  "schemaVersion": 1,\n  "deviceProperties": [\n    {\n      "id": 0, "name": "NVIDIA H200"\n'
        '    }\n  ],\n  "traceEvents": [\n' + ",\n".join(parts) + '\n  ],\n  "traceName": "t"\n}\n'
    )


def write_trace(path: Path, events, layout="kineto") -> Path:
    if layout == "kineto":
        text = kineto_text(events)
    elif layout == "compact":
        text = json.dumps({"traceEvents": events}, separators=(",", ":"))
    elif layout == "indent":
        text = json.dumps({"traceEvents": events}, indent=2)
    elif layout == "array":
        text = json.dumps(events)
    else:
        raise ValueError(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# A and B cover every category once:
#   old_attn  only in A            new_attn  only in B
#   gemm      3 -> 4 launches      drift     same count, -100 us
#   same      same count, +0.002 us (below threshold)
#   nccl      same count, +1 us (below threshold, communication)
A_EVENTS = (
    [kernel("gemm", 100.0)] * 3
    + [kernel("old_attn", 50.0)] * 2
    + [kernel(NCCL, 30.0)]
    + [cpu_op()] * 3
    + [kernel("same", 10.0)] * 2
    + [kernel("drift", 1000.0)]
)
B_EVENTS = (
    [kernel("gemm", 90.0)] * 3
    + [kernel("new_attn", 20.0)] * 2
    + [kernel(NCCL, 31.0)]
    + [cpu_op()]
    + [kernel("same", 10.001)] * 2
    + [kernel("drift", 900.0)]
    + [kernel("gemm", 1.5)]
)


@pytest.fixture
def ab(tmp_path):
    return (
        write_trace(tmp_path / "a.pt.trace.json", A_EVENTS),
        write_trace(tmp_path / "b.pt.trace.json", B_EVENTS),
    )


def run_cli(capsys, *args):
    rc = main([str(a) for a in args] + ["--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *args):
    rc, out, err = run_cli(capsys, *args, "--json")
    assert rc == 0, err
    return json.loads(out)


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------


def test_reader_counts_kineto_trace(tmp_path):
    path = write_trace(tmp_path / "t.json", A_EVENTS)
    stats = read_trace_file(path)
    assert stats.total_events == len(A_EVENTS)
    assert stats.kernels == {
        "gemm": [3, 300_000],
        "old_attn": [2, 100_000],
        NCCL: [1, 30_000],
        "same": [2, 20_000],
        "drift": [1, 1_000_000],
    }
    assert stats.notes == []
    assert read_trace_file(path, strict=True).kernels == stats.kernels


ODD_EVENTS = [
    kernel('quoted \\"name\\" caf\u00e9', 1.25),
    {"name": LAMBDA, "cat": "kernel", "ph": "X", "ts": 1, "dur": 2},  # name before cat, braces in it
    {"args": {"nested": {"a": 1}}, "cat": "kernel", "name": "args_first", "ph": "X", "dur": 3},
    {"ph": "X", "cat": "Kernel", "name": "old_kineto_case", "dur": 4},
    {"ph": "X", "cat": "kernel", "name": "no_dur"},  # skipped, counted as such
    {"ph": "f", "cat": "kernel", "name": "flow", "id": 1},  # not a complete event
    {"ph": "X", "cat": "kernel", "name": "int_dur", "pid": "stream 7", "tid": "s", "ts": 1, "dur": 7},
    cpu_op(),
    {"ph": "M", "name": "process_name", "args": {"name": "python"}},
]
ODD_EXPECTED = {
    'quoted \\"name\\" caf\u00e9': [1, 1250],
    LAMBDA: [1, 2000],
    "args_first": [1, 3000],
    "old_kineto_case": [1, 4000],
    "int_dur": [1, 7000],
}


@pytest.mark.parametrize("layout", ["kineto", "compact", "indent", "array"])
@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_reader_layouts_fast_equals_strict(tmp_path, layout, suffix):
    path = write_trace(tmp_path / f"t{suffix}", ODD_EVENTS, layout)
    fast = read_trace_file(path)
    strict = read_trace_file(path, strict=True)
    assert fast.kernels == ODD_EXPECTED
    assert strict.kernels == ODD_EXPECTED
    assert fast.skipped_kernels == strict.skipped_kernels == 1
    assert fast.total_events == strict.total_events == len(ODD_EVENTS)


@pytest.mark.parametrize("chunk", [7, 64, 301, 4096])
def test_reader_chunk_boundaries(tmp_path, monkeypatch, chunk):
    """Events cut anywhere by chunk boundaries are read exactly once."""
    events = []
    for i in range(60):
        events += [cpu_op(), kernel(f"k{i % 7}", 1.0 + i), kernel(LAMBDA, 0.5)]
    events += ODD_EVENTS
    path = write_trace(tmp_path / "t.json", events)
    expected = read_trace_file(path, strict=True)
    monkeypatch.setattr(trace_reader, "CHUNK_CHARS", chunk)
    monkeypatch.setattr(trace_reader, "MAX_EVENT_CHARS", 2048)
    got = read_trace_file(path)
    assert got.kernels == expected.kernels
    assert got.total_events == expected.total_events == len(events)
    assert read_trace_file(path, strict=True).kernels == expected.kernels


def test_reader_falls_back_to_strict_on_unverifiable_text(tmp_path, monkeypatch):
    # A kernel event whose name holds more "{" than the fast path tries.
    name = "k" + "{x}" * 20
    events = [{"name": name, "cat": "kernel", "ph": "X", "dur": 1.5}]
    path = write_trace(tmp_path / "t.json", events, "compact")
    stats = read_trace_file(path)
    assert stats.kernels == {name: [1, 1500]}
    assert stats.notes and "strict mode" in stats.notes[0]


def test_reader_directory_of_ranks(tmp_path):
    run = tmp_path / "run"
    for rank in range(4):
        write_trace(run / f"1700000000.1-TP-{rank}.trace.json.gz", A_EVENTS)
    (run / "server_args.json").write_text('{"tp_size": 4}')
    stats = read_traces(run)
    assert len(stats.files) == 4
    assert stats.kernels["gemm"] == [12, 1_200_000]
    assert stats.total_events == 4 * len(A_EVENTS)


def test_reader_directory_newest_run_merged_and_stage(tmp_path):
    root = tmp_path / "profiles" / "baseline"
    old = root / "1700000000.0"
    new = root / "1700000099.0"
    write_trace(old / "p-TP-0-EXTEND.trace.json.gz", [kernel("old_run", 1.0)])
    write_trace(new / "p-TP-0-EXTEND.trace.json.gz", [kernel("prefill", 2.0)])
    write_trace(new / "p-TP-0-DECODE.trace.json.gz", [kernel("decode", 3.0)])
    write_trace(new / "merged-p.trace.json.gz", [kernel("prefill", 2.0), kernel("decode", 3.0)])
    os.utime(old, (1, 1))

    files, notes = trace_reader.find_trace_files(root)
    assert [f.name for f in files] == ["p-TP-0-DECODE.trace.json.gz", "p-TP-0-EXTEND.trace.json.gz"]
    assert any("using the newest: 1700000099.0" in n for n in notes)
    assert any("merged-*" in n for n in notes)
    assert any("--stage" in n for n in notes)

    stats = read_traces(root, stage="extend")
    assert stats.kernels == {"prefill": [1, 2000]}
    stats = read_traces(root, pattern="*DECODE*")
    assert stats.kernels == {"decode": [1, 3000]}


# --------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------


def test_classification_and_accounting(capsys, ab):
    res = run_json(capsys, *ab)
    cats = res["categories"]
    names = {cat: [r["name"] for r in group["rows"]] for cat, group in cats.items()}
    assert names == {
        "only_in_a": ["old_attn"],
        "only_in_b": ["new_attn"],
        "changed_count": ["gemm"],
        "changed_wall": ["drift"],
        "below_threshold": [NCCL, "same"],
    }
    assert cats["only_in_a"]["delta_ns"] == -100_000
    assert cats["only_in_b"]["delta_ns"] == 40_000
    assert cats["changed_count"]["delta_ns"] == 271_500 - 300_000
    assert cats["changed_count"]["launches_a"] == 3 and cats["changed_count"]["launches_b"] == 4
    assert cats["changed_wall"]["delta_ns"] == -100_000
    assert cats["below_threshold"]["delta_ns"] == 1_000 + 2

    acc = res["accounting"]
    parts = [acc[f"{c}_ns"] for c in kernel_diff.CATEGORIES]
    assert sum(parts) == acc["total_delta_ns"] == res["delta"]["kernel_wall_ns"]
    assert res["a"]["kernel_wall_ns"] == 1_450_000
    assert res["b"]["kernel_wall_ns"] == 1_262_502
    assert res["a"]["total_events"] == len(A_EVENTS)
    assert res["a"]["kernel_launches"] == 9 and res["b"]["kernel_launches"] == 10
    assert res["speedup"]["kernel_wall"] == pytest.approx(1_450_000 / 1_262_502)


def test_nccl_excluded_from_non_comm_wall(capsys, ab):
    res = run_json(capsys, *ab)
    assert res["a"]["comm_wall_ns"] == 30_000
    assert res["a"]["non_comm_wall_ns"] == 1_420_000
    assert res["b"]["non_comm_wall_ns"] == 1_231_502
    assert res["speedup"]["non_comm_wall"] == pytest.approx(1_420_000 / 1_231_502)
    assert [r["comm"] for r in res["categories"]["below_threshold"]["rows"]] == [True, False]

    res = run_json(capsys, *ab, "--comm-regex", "nccl|drift")
    assert res["a"]["comm_wall_ns"] == 1_030_000


def test_thresholds_move_kernels_between_categories(capsys, ab):
    res = run_json(capsys, *ab, "--min-delta-us", "200")
    assert [r["name"] for r in res["categories"]["changed_wall"]["rows"]] == []
    res = run_json(capsys, *ab, "--min-delta-us", "0.5", "--min-rel-delta", "0.01")
    assert [r["name"] for r in res["categories"]["changed_wall"]["rows"]] == ["drift", NCCL]
    res = run_json(capsys, *ab, "--min-rel-delta", "0.5")
    assert res["categories"]["changed_wall"]["rows"] == []
    for r in (res,):
        acc = r["accounting"]
        assert sum(acc[f"{c}_ns"] for c in kernel_diff.CATEGORIES) == acc["total_delta_ns"]


def test_text_report_sections_add_up(capsys, ab):
    rc, out, _ = run_cli(capsys, *ab)
    assert rc == 0
    for title in ("Only in A (removed)", "Only in B (added)", "Changed launch count",
                  "Same launch count, changed wall", "Accounting"):
        assert title in out
    assert "without NCCL" in out
    section = out.split("Accounting of the kernel-wall delta B - A (us):")[1].splitlines()
    values = [Decimal(re.sub(r"[,+]", "", line.split()[-1])) for line in section if re.search(r"\d\.\d{3}$", line)]
    *parts, total = values
    assert len(parts) == 5
    assert sum(parts) == total == Decimal("-187.498")


def test_top_limits_text_rows_not_json(capsys, tmp_path):
    a = write_trace(tmp_path / "a.json", [kernel(f"gone{i}", 10.0 + i) for i in range(5)])
    b = write_trace(tmp_path / "b.json", [kernel("x", 1.0)])
    rc, out, _ = run_cli(capsys, a, b, "--top", "2")
    assert rc == 0
    assert "gone4" in out and "gone3" in out and "gone0" not in out
    assert "... 3 more, delta -33.000 us" in out
    res = run_json(capsys, a, b, "--top", "2")
    assert len(res["categories"]["only_in_a"]["rows"]) == 5


def test_strip_templates(capsys, tmp_path):
    a = write_trace(tmp_path / "a.json", [kernel("gemm<int, 4>(P)", 1.0), kernel("gemm<float, 8>(P)", 2.0)])
    b = write_trace(tmp_path / "b.json", [kernel("gemm<half,  16>(P)", 3.0)])
    res = run_json(capsys, a, b, "--strip-templates")
    rows = res["categories"]["changed_count"]["rows"]
    assert [(r["name"], r["count_a"], r["count_b"]) for r in rows] == [("gemm(P)", 2, 1)]
    res = run_json(capsys, a, b)
    assert res["categories"]["only_in_a"]["kernels"] == 2


def test_strip_template_args_edge_cases():
    assert strip_template_args("void f<a<b>, c>(int)") == "void f(int)"
    assert strip_template_args("bool operator<(X, Y)") == "bool operator<(X, Y)"
    assert strip_template_args("S<T>::operator<<<int>(x)") == "S::operator<<(x)"
    assert strip_template_args("k<T>(p->q)") == "k(p->q)"
    assert strip_template_args("broken<") == "broken<"
    assert kernel_diff.normalise_name("  a \n  b ") == "a b"


def test_directories_aggregate_ranks(capsys, tmp_path):
    for rank in range(2):
        write_trace(tmp_path / "A" / f"r-TP-{rank}.trace.json.gz", A_EVENTS)
        write_trace(tmp_path / "B" / f"r-TP-{rank}.trace.json", B_EVENTS)
    rc, out, _ = run_cli(capsys, tmp_path / "A", tmp_path / "B")
    assert rc == 0
    assert "(2 trace files)" in out
    res = run_json(capsys, tmp_path / "A", tmp_path / "B")
    assert res["a"]["num_files"] == 2
    assert res["delta"]["kernel_wall_ns"] == 2 * (1_262_502 - 1_450_000)


def _pyplot_usable() -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except Exception:  # absent, or built against another numpy than the one on the path
        return False
    return True


@pytest.mark.skipif(not _pyplot_usable(), reason="matplotlib.pyplot cannot be imported here")
def test_png(ab, tmp_path):
    png = tmp_path / "diff.png"
    # A fresh interpreter: the import-time stand-ins of tests/sglang (an IPython among them) live in
    # this process when both folders run in one, and matplotlib probes IPython when it draws.
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run(
        [sys.executable, "-m", "sglang_dsv4_sparse.tools.kernel_diff", *map(str, ab), "--png", str(png), "--quiet"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in done.stdout


@pytest.mark.parametrize("output", ["--json", "--strip-templates"])
def test_a_reader_that_stops_early_ends_it_quietly(ab, output):
    # `dsv4-kernel-diff --json | head`: the reader has gone before the report is written. The pipe's
    # read end is closed before the command starts, so every write meets a broken pipe.
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sglang_dsv4_sparse.tools.kernel_diff", *map(str, ab), output, "--quiet"],
            cwd=root, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0
    assert done.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit


def test_png_with_a_broken_matplotlib(capsys, ab, tmp_path, monkeypatch):
    # matplotlib imports, but its pyplot does not (a broken install): a clear error, no traceback.
    broken = types.ModuleType("matplotlib")
    broken.use = lambda backend: None
    monkeypatch.setitem(sys.modules, "matplotlib", broken)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import raises ImportError
    rc, _, err = run_cli(capsys, *ab, "--png", tmp_path / "x.png")
    assert rc == 2
    assert "argument --png: matplotlib is installed but cannot be used" in err


def test_png_without_matplotlib(capsys, ab, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    rc, _, err = run_cli(capsys, *ab, "--png", tmp_path / "x.png")
    assert rc == 2
    assert "argument --png: matplotlib is not installed" in err


def test_progress_without_tqdm(capsys, ab, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setattr(kernel_diff, "PROGRESS_MIN_BYTES", 0)
    assert main([str(ab[0]), str(ab[1])]) == 0
    err = capsys.readouterr().err
    assert "100%" in err and "MiB" in err
    assert main([str(ab[0]), str(ab[1]), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_with_tqdm(capsys, ab, monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(kernel_diff, "PROGRESS_MIN_BYTES", 0)
    assert main([str(ab[0]), str(ab[1])]) == 0
    assert "B: b.pt.trace.json" in capsys.readouterr().err


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def _error(capsys, *args):
    rc, out, err = run_cli(capsys, *args)
    assert rc == 2 and out == ""
    return err


def test_error_missing_file(capsys, ab, tmp_path):
    err = _error(capsys, ab[0], tmp_path / "nope.json")
    assert "argument B:" in err and "nope.json: no such file or directory" in err


def test_error_directory_without_traces(capsys, ab, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "server_args.json").write_text("{}")
    err = _error(capsys, empty, ab[1])
    assert "argument A:" in err and "holds no trace files" in err
    err = _error(capsys, ab[0], ab[0].parent, "--stage", "decode")
    assert "argument B:" in err and "-DECODE" in err


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("not json at all", "not a JSON trace"),
        ('{"foo": [1, 2]}', 'no "traceEvents" array'),
        ('{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "dur": 1},', "truncated"),
    ],
)
@pytest.mark.parametrize("strict", [False, True])
def test_error_unparsable(capsys, ab, tmp_path, text, message, strict):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    err = _error(capsys, ab[0], bad, *(["--strict"] if strict else []))
    assert "argument B:" in err and str(bad) in err and message in err


def test_strict_rejects_broken_middle(capsys, ab, tmp_path):
    text = kineto_text(A_EVENTS).replace('"cpu_op",', '"cpu_op" "oops",', 1)
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    err = _error(capsys, bad, ab[1], "--strict")
    assert "argument A:" in err and "invalid JSON at character" in err


def test_error_corrupt_gzip(capsys, ab, tmp_path):
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(ab[0].read_bytes())[:200])
    err = _error(capsys, ab[0], bad)
    assert "argument B:" in err and "gzip" in err


def test_error_bad_options(capsys, ab, tmp_path):
    assert "argument --top" in _error(capsys, *ab, "--top", "-1")
    assert "argument --comm-regex" in _error(capsys, *ab, "--comm-regex", "(")
    assert "argument --min-rel-delta" in _error(capsys, *ab, "--min-rel-delta", "-0.1")
    with pytest.raises(SystemExit) as exc:
        main([str(ab[0])])
    assert exc.value.code == 2


def test_reader_error_type(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        read_traces(tmp_path / "missing")
