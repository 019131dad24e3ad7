"""SGLang's DSv4 attention kit against both backends, every case, 8 to 128 heads (GPU).

    python scripts/sglang_kit_matrix.py [--heads 8,16,64,128] [--drafts 2,3,4] [--json FILE] [--no-graph]
                                        [--no-spec] [--expect-ours-for-spec]
    python scripts/sglang_kit_matrix.py --from-json sglang_kit_matrix.json [--markdown]

Runs every ``make_dsv4_cases`` case as a window-only, C4 and C128 layer
(extends with ``SGLANG_OPT_FLASHMLA_SPARSE_PREFILL`` on and off) through this
package's backend and SGLang 0.5.23's ``DeepseekV4AttnBackend`` on the same
inputs. A rank of fewer than 64 heads hands both backends the query
zero-padded to 64, as the DSv4 model does. Each backend must match the kit's
reference, and ours must match SGLang's, with the kit's tolerance. Then the
kit's CUDA-graph decode runner (``run_dsv4_cuda_graph_decode_case``) on each
decode case and ratio for both backends.

The speculative steps (DSV4_SPEC.md section 4b) too: target verify as a
window-only, C4 and C128 layer and draft extend (window-only), 2 to 4 draft
tokens per request, one request or three (one prefix shorter than the window,
one whose drafts cross a page boundary), through both backends against the
kit's reference (``route`` verify / draft_ext in the table; ``ours ran``: the
cases whose attention our core ran, where our backend did not hand them to
SGLang's), then the kit's CUDA-graph verify runner
(``run_dsv4_eagle_verify_cuda_graph_case``: replay matches the reference and
the eager run) on each ratio and draft count for both backends. The kit has
no DSv4 CUDA-graph runner for draft extend. ``--expect-ours-for-spec`` (or
``kit_runner.EXPECT_OURS_FOR_SPEC``) fails a speculative case SGLang's
attention ran.

Prints a summary table last; exit status 1 if anything failed. Every row
goes to ``--json FILE``, by default ``$OUT/sglang_kit_matrix.json``, or with OUT unset to
``gpu_check_out/sglang_kit_matrix.json`` in this checkout (the folder
``scripts/gpu_sglang_check.sh``, which runs this script, sets OUT to).
Imports the test-only stand-ins and helpers from ``tests/sglang``.
``--from-json`` prints the summary of a saved run (no GPU needed);
``--markdown`` prints it as BENCHMARKS.md shows it, one row per head count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "sglang"))
sys.path.insert(0, ROOT)

import stand_ins  # noqa: E402

os.environ.setdefault("SGLANG_FP8_PAGED_MQA_LOGITS_TORCH", "1")
os.environ.setdefault("SGLANG_OPT_USE_TOPK_V2", "0")

JSON_NAME = "sglang_kit_matrix.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default="8,16,64,128", help="comma-separated real head counts")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write every row here (default: $OUT/sglang_kit_matrix.json, or with OUT unset "
                             "gpu_check_out/sglang_kit_matrix.json in this checkout)")
    parser.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph decode and verify runners")
    parser.add_argument("--no-spec", action="store_true", help="skip the speculative (verify, draft extend) cases")
    parser.add_argument("--drafts", default=None,
                        help="comma-separated draft tokens per request (speculative cases; default 2,3,4)")
    parser.add_argument("--expect-ours-for-spec", action="store_true",
                        help="fail a speculative case whose attention SGLang's backend ran (default: "
                             "kit_runner.EXPECT_OURS_FOR_SPEC)")
    parser.add_argument("--from-json", metavar="FILE", help="print the summary of a saved sglang_kit_matrix.json and exit")
    parser.add_argument("--markdown", action="store_true", help="print the summary as BENCHMARKS.md shows it")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        if args.markdown:
            print("\n".join(_markdown(saved)))
            return 0
        heads_list = sorted({r["heads"] for r in saved["kit"]})
        return _summary(saved["kit"], saved["graph"], heads_list, saved.get("spec_graph", []))
    import torch

    from sglang_dsv4_sparse.benchmarking import no_gpu

    if not torch.cuda.is_available():
        return no_gpu("sglang_kit_matrix.py")  # before SGLang's slow import
    print("stand-ins:", stand_ins.install() or "none needed", flush=True)

    import kit_runner as kr
    if args.expect_ours_for_spec:
        kr.EXPECT_OURS_FOR_SPEC = True
    heads_list = [int(h) for h in args.heads.split(",")]
    drafts_list = [int(d) for d in args.drafts.split(",")] if args.drafts else list(kr.DRAFT_COUNTS)
    if args.no_spec:
        drafts_list = []
    testcase = unittest.TestCase()
    rows = []
    t_start = time.time()
    total = sum(
        1 for _ in heads_list for case in kr.all_cases() for _ in kr.RATIOS for _ in kr.sparse_prefill_choices(case)
    ) + len(heads_list) * sum(map(len, kr.SPEC_RATIOS.values())) * len(drafts_list) * len(kr.SPEC_PREFIXES)
    done = 0
    for heads in heads_list:
        for case in kr.all_cases():
            for ratio in kr.RATIOS:
                for sparse in kr.sparse_prefill_choices(case):
                    done += 1
                    row = dict(case=case.name, ratio=ratio, heads=heads, route="sparse" if sparse else "paged")
                    reason = kr.kit_cannot_seed(case, ratio, sparse)
                    if reason:
                        row.update(status="skip", why=reason)
                        rows.append(row)
                        continue
                    try:
                        res = kr.run_case(case, ratio=ratio, real_heads=heads, sparse_prefill=sparse,
                                          backends=("ours", "sglang"), device="cuda", testcase=testcase)
                        ours, theirs = res["ours"], res["sglang"]
                        row.update(
                            ours_vs_ref=kr.worst_error(ours.output, ours.expected),
                            sglang_vs_ref=kr.worst_error(theirs.output, theirs.expected),
                            ours_vs_sglang=kr.worst_error(ours.output, theirs.output),
                        )
                        ok = max(row["ours_vs_ref"], row["sglang_vs_ref"], row["ours_vs_sglang"]) <= 1.0
                        row["status"] = "pass" if ok else "FAIL"
                    except Exception as exc:
                        row.update(status="ERROR", why=f"{type(exc).__name__}: {exc}"[:400])
                        traceback.print_exc()
                    rows.append(row)
                    if row["status"] != "pass" or done % 40 == 0:
                        print(f"[{done}/{total}, {time.time() - t_start:.0f} s] {row}", flush=True)
    for heads in heads_list:
        for kind, ratios in kr.SPEC_RATIOS.items():
            for ratio in ratios:
                for drafts in drafts_list:
                    for prefixes in kr.SPEC_PREFIXES.values():
                        done += 1
                        rows.append(_spec_row(kr, testcase, kind, ratio, heads, drafts, prefixes))
                        if rows[-1]["status"] != "pass" or done % 40 == 0:
                            print(f"[{done}/{total}, {time.time() - t_start:.0f} s] {rows[-1]}", flush=True)
    graph_rows = [] if args.no_graph else _graph_runner(kr, testcase)
    spec_graph_rows = [] if args.no_graph or not drafts_list else _spec_graph_runner(kr, testcase, drafts_list)
    from sglang_dsv4_sparse.benchmarking import json_path, run_header, save_json

    out_path = json_path(JSON_NAME, args.json) or os.path.join(ROOT, "gpu_check_out", JSON_NAME)
    save_json(JSON_NAME, dict(header=run_header(ROOT, packages=("sglang",)), kit=rows, graph=graph_rows,
                              spec_graph=spec_graph_rows), out_path)
    print(f"rows saved to {out_path}", flush=True)
    if args.markdown:
        print("\n".join(_markdown(dict(kit=rows, graph=graph_rows, spec_graph=spec_graph_rows))))
    return _summary(rows, graph_rows, heads_list, spec_graph_rows)


def _spec_row(kr, testcase, kind: str, ratio: int, heads: int, drafts: int, prefixes) -> dict:
    """One verify / draft-extend case on both backends (``kit_runner.spec_row``); an exception makes an ERROR row."""
    try:
        return kr.spec_row(kind, ratio=ratio, real_heads=heads, drafts=drafts, prefix_lens=prefixes,
                           backends=("ours", "sglang"), device="cuda", testcase=testcase)
    except Exception as exc:
        traceback.print_exc()
        name = kr.spec_case(kind, ratio=ratio, real_heads=heads, drafts=drafts, prefix_lens=prefixes).name
        return dict(case=name, ratio=ratio, heads=heads, route=kind, drafts=drafts, prefix_lens=list(prefixes),
                    status="ERROR", why=f"{type(exc).__name__}: {exc}"[:400])


def _spec_graph_runner(kr, testcase, drafts_list) -> list:
    """The kit's CUDA-graph verify runner, both backends, 64 heads: every ratio, draft count and graph prefix set.

    The runner captures two requests (a one-request case replays padded),
    checks the eager run and the replay against the reference and the replay
    against the eager run (``DSV4_GRAPH_ATOL``). ``ours_ran``: no layer went to
    SGLang's attention while it ran (our backend's eager, capture and replay).
    """
    from sglang.srt.layers.attention import attention_registry as registry

    rows = []
    try:
        from sglang.test.kits.attention_unittest.runner_modes.speculative_target_verify_runner import (
            run_dsv4_eagle_verify_cuda_graph_case,
        )
    except Exception as exc:  # its imports reach into SGLang's scheduler
        traceback.print_exc()
        return [dict(backend=name, case="(import)", ratio=0, status="FAIL", why=f"{type(exc).__name__}: {exc}")
                for name in kr.BACKENDS]
    saved = registry.ATTENTION_BACKENDS["dsv4"]
    try:
        for name, factory in kr.BACKENDS.items():
            registry.ATTENTION_BACKENDS["dsv4"] = factory
            for ratio in kr.SPEC_RATIOS["verify"]:
                for drafts in drafts_list:
                    for prefixes in kr.SPEC_GRAPH_PREFIXES.values():
                        case = kr.spec_case("verify", ratio=ratio, real_heads=64, drafts=drafts, prefix_lens=prefixes)
                        row = dict(backend=name, case=case.name, ratio=ratio, drafts=drafts,
                                   prefix_lens=list(prefixes))
                        sglang_layers = []
                        try:
                            # Capture, eager and padded replay share one layout: sized for the capture's two requests.
                            with kr.watch_sglang_attention(sglang_layers, can_run=True):
                                run_dsv4_eagle_verify_cuda_graph_case(
                                    testcase, case, max_context_len=kr.spec_max_context_len(case),
                                    swa_size=kr.spec_swa_size(case, num_reqs=2), device="cuda",
                                    cuda_graph_capture_batch_size=2,
                                )
                            row["status"] = "pass"
                        except Exception as exc:
                            row.update(status="FAIL", why=f"{type(exc).__name__}: {exc}"[:400])
                            traceback.print_exc()
                        if name == "ours":
                            row["ours_ran"] = not sglang_layers
                            if kr.EXPECT_OURS_FOR_SPEC and sglang_layers and row["status"] == "pass":
                                row.update(status="FAIL", why="SGLang's attention ran (expected ours)")
                        rows.append(row)
    finally:
        registry.ATTENTION_BACKENDS["dsv4"] = saved
    return rows


def _graph_runner(kr, testcase) -> list:
    """The kit's CUDA-graph decode runner on every decode case and ratio, both backends, 64 heads."""
    from sglang.srt.layers.attention import attention_registry as registry

    rows = []
    try:
        from sglang.test.kits.attention_unittest.runner_modes.cuda_graph_decode_runner import (
            run_dsv4_cuda_graph_decode_case,
        )
    except Exception as exc:  # its imports reach far into SGLang
        traceback.print_exc()
        return [dict(backend=name, case="(import)", ratio=0, status="FAIL", why=f"{type(exc).__name__}: {exc}")
                for name in kr.BACKENDS]
    saved = registry.ATTENTION_BACKENDS["dsv4"]
    try:
        for name, factory in kr.BACKENDS.items():
            registry.ATTENTION_BACKENDS["dsv4"] = factory
            for case in kr.all_cases():
                if not case.forward_mode.is_decode():
                    continue
                for ratio in kr.RATIOS:
                    row = dict(backend=name, case=case.name, ratio=ratio)
                    try:
                        run_dsv4_cuda_graph_decode_case(testcase, kr.variant(case, ratio=ratio, real_heads=64))
                        row["status"] = "pass"
                    except Exception as exc:
                        row.update(status="FAIL", why=f"{type(exc).__name__}: {exc}"[:400])
                        traceback.print_exc()
                    rows.append(row)
    finally:
        registry.ATTENTION_BACKENDS["dsv4"] = saved
    return rows


SPEC_ROUTES = ("verify", "draft_ext")


def _is_spec(row) -> bool:
    return row["route"] in SPEC_ROUTES


def _ours_ran(rows) -> str:
    """``n/m``: the speculative rows whose attention our core ran, of those that recorded it."""
    known = [r for r in rows if "ours_ran" in r]
    return f"{sum(bool(r['ours_ran']) for r in known)}/{len(known)}" if known else "-"


def _graph_counts(graph_rows, name: str) -> str:
    sel = [r for r in graph_rows if r["backend"] == name]
    return f"{sum(r['status'] == 'pass' for r in sel)}/{len(sel)}"


def _markdown(saved) -> list[str]:
    """One row per head count (every ratio and route): cases, verdicts and the worst errors on the kit's scale.

    The speculative cases, where the run has them, get a table of their own.
    """
    from sglang_dsv4_sparse.benchmarking import header_line, markdown_table

    all_rows, graph_rows = saved["kit"], saved.get("graph", [])
    spec_graph_rows = saved.get("spec_graph", [])
    rows = [r for r in all_rows if not _is_spec(r)]
    spec_rows = [r for r in all_rows if _is_spec(r)]

    def worst(ran, key):
        values = [r[key] for r in ran if key in r]
        return f"{max(values):.3f}" if values else "-"

    table = []
    for heads in sorted({r["heads"] for r in rows}):
        sel = [r for r in rows if r["heads"] == heads]
        ran = [r for r in sel if "ours_vs_ref" in r]
        counts = [sum(r["status"] in status for r in sel) for status in (("pass",), ("skip",), ("FAIL", "ERROR"))]
        table.append([heads, len(sel), *counts, worst(ran, "ours_vs_ref"), worst(ran, "sglang_vs_ref"),
                      worst(ran, "ours_vs_sglang")])
    lines = [header_line(saved.get("header")), ""]
    lines += markdown_table(["heads", "cases", "pass", "skip", "fail", "ours vs reference", "SGLang vs reference",
                             "ours vs SGLang"], table)
    if graph_rows:
        runs = [_graph_counts(graph_rows, name) for name in ("ours", "sglang")]
        lines += ["", f"The kit's CUDA-graph decode runner (64 heads): {runs[0]} cases pass on ours, {runs[1]} on SGLang's."]
    if spec_rows:
        drafts = sorted({r["drafts"] for r in spec_rows})
        lines += ["", f"Speculative steps: target verify (C0, C4, C128) and draft extend (C0), "
                  f"{min(drafts)}-{max(drafts)} draft tokens per request; `ours ran`: cases whose attention our "
                  "core ran (the rest it handed to SGLang's).", ""]
        spec_table = []
        for heads in sorted({r["heads"] for r in spec_rows}):
            for route in SPEC_ROUTES:
                sel = [r for r in spec_rows if r["heads"] == heads and r["route"] == route]
                if not sel:
                    continue
                ran = [r for r in sel if "ours_vs_ref" in r]
                counts = [sum(r["status"] in status for r in sel)
                          for status in (("pass",), ("skip",), ("FAIL", "ERROR"))]
                spec_table.append([heads, route, len(sel), *counts, _ours_ran(sel), worst(ran, "ours_vs_ref"),
                                   worst(ran, "sglang_vs_ref"), worst(ran, "ours_vs_sglang")])
        lines += markdown_table(["heads", "step", "cases", "pass", "skip", "fail", "ours ran", "ours vs reference",
                                 "SGLang vs reference", "ours vs SGLang"], spec_table)
    if spec_graph_rows:
        runs = [_graph_counts(spec_graph_rows, name) for name in ("ours", "sglang")]
        ours_ran = _ours_ran([r for r in spec_graph_rows if r["backend"] == "ours"])
        lines += ["", f"The kit's CUDA-graph verify runner (64 heads, replay vs eager and reference): {runs[0]} cases "
                  f"pass on ours (our attention ran {ours_ran}), {runs[1]} on SGLang's."]
    for why in sorted({r["why"] for r in all_rows if r["status"] == "skip"}):
        lines += ["", f"Skipped for both backends: {why}."]
    return lines


def _summary(rows, graph_rows, heads_list, spec_graph_rows=()) -> int:
    print("\n== SGLang DSv4 attention kit, both backends (worst |diff| / kit tolerance; <= 1 passes)")
    print(f"{'heads':>5} {'ratio':>7} {'route':>9} {'cases':>5} {'pass':>4} {'skip':>4} {'fail':>4}"
          f" {'ours/ref':>8} {'sgl/ref':>8} {'ours/sgl':>8} {'ours ran':>8}")
    bad = 0

    def print_group(heads, ratio_label, route, sel):
        nonlocal bad
        ran = [r for r in sel if "ours_vs_ref" in r]
        fails = [r for r in sel if r["status"] in ("FAIL", "ERROR")]
        bad += len(fails)

        def worst(key):
            # A CPU run of the speculative rows has no SGLang columns (its attention needs FlashMLA).
            values = [r[key] for r in ran if key in r]
            return f"{max(values):8.3f}" if values else f"{'-':>8}"

        print(f"{heads:>5} {ratio_label:>7} {route:>9} {len(sel):>5} {sum(r['status'] == 'pass' for r in sel):>4}"
              f" {sum(r['status'] == 'skip' for r in sel):>4} {len(fails):>4}"
              f" {worst('ours_vs_ref')} {worst('sglang_vs_ref')} {worst('ours_vs_sglang')}"
              f" {_ours_ran(sel) if route in SPEC_ROUTES else '-':>8}")

    for heads in heads_list:
        for ratio in (0, 4, 128):
            for route in ("sparse", "paged"):
                sel = [r for r in rows if r["heads"] == heads and r["ratio"] == ratio and r["route"] == route]
                if sel:
                    print_group(heads, str(ratio), route, sel)
        # One line per speculative step and head count (its ratios together), so the
        # table stays short enough for gpu_sglang_check.sh's summary; failures are listed below.
        for route in SPEC_ROUTES:
            sel = [r for r in rows if r["heads"] == heads and r["route"] == route]
            if sel:
                print_group(heads, "/".join(str(x) for x in sorted({r["ratio"] for r in sel})), route, sel)
    for r in rows:
        if r["status"] in ("FAIL", "ERROR"):
            drafts = f" d{r['drafts']} p{r['prefix_lens']}" if _is_spec(r) else ""
            print(f"  {r['status']}: {r['case']} c{r['ratio']} {r['route']}{drafts} h{r['heads']}: {r.get('why', '')}")
    graphs = [("decode", graph_rows), ("verify", list(spec_graph_rows))]
    if any(g for _, g in graphs):
        print("\n== the kit's CUDA-graph runners (64 heads)")
        for name in ("ours", "sglang"):
            parts = []
            for what, grows in graphs:
                sel = [r for r in grows if r["backend"] == name]
                if not sel:
                    continue
                fails = [r for r in sel if r["status"] != "pass"]
                bad += len(fails) if name == "ours" else 0
                ran = f" (our attention ran {_ours_ran(sel)})" if what == "verify" and name == "ours" else ""
                parts.append(f"{what} {len(sel) - len(fails)}/{len(sel)} pass{ran}")
            print(f"{name:>7}: {', '.join(parts)}")
            for what, grows in graphs:
                for r in grows:
                    if r["backend"] == name and r["status"] != "pass":
                        drafts = f" d{r['drafts']} p{r['prefix_lens']}" if "drafts" in r else ""
                        print(f"  FAIL {what} {r['case']} c{r['ratio']}{drafts}: {r.get('why', '')}")
    skipped = sorted({r["why"] for r in rows if r["status"] == "skip"})
    for why in skipped:
        print(f"skipped (both backends): {why}")
    print(f"kit matrix: {'all passed' if bad == 0 else f'{bad} failed'}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
