"""SGLang's DSv4 attention kit against both backends, every case, 8 to 128 heads (GPU).

    python scripts/sglang_kit_matrix.py [--heads 8,16,64,128] [--json FILE] [--no-graph]
    python scripts/sglang_kit_matrix.py --from-json sglang_kit_matrix.json [--markdown]

Runs every ``make_dsv4_cases`` case as a window-only, C4 and C128 layer
(extends with ``SGLANG_OPT_FLASHMLA_SPARSE_PREFILL`` on and off) through this
package's backend and SGLang 0.5.23's ``DeepseekV4AttnBackend`` on the same
inputs. A rank of fewer than 64 heads hands both backends the query
zero-padded to 64, as the DSv4 model does. Each backend must match the kit's
reference, and ours must match SGLang's, with the kit's tolerance. Then the
kit's CUDA-graph decode runner (``run_dsv4_cuda_graph_decode_case``) on each
decode case and ratio for both backends. Prints a summary table last; exit
status 1 if anything failed. Every row goes to ``--json FILE``, by default
``$OUT/sglang_kit_matrix.json``, or with OUT unset to
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
    parser.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph decode runner")
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
        return _summary(saved["kit"], saved["graph"], heads_list)
    import torch

    from sglang_dsv4_sparse.benchmarking import no_gpu

    if not torch.cuda.is_available():
        return no_gpu("sglang_kit_matrix.py")  # before SGLang's slow import
    print("stand-ins:", stand_ins.install() or "none needed", flush=True)

    import kit_runner as kr
    heads_list = [int(h) for h in args.heads.split(",")]
    testcase = unittest.TestCase()
    rows = []
    t_start = time.time()
    total = sum(
        1 for _ in heads_list for case in kr.all_cases() for _ in kr.RATIOS for _ in kr.sparse_prefill_choices(case)
    )
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
    graph_rows = [] if args.no_graph else _graph_runner(kr, testcase)
    from sglang_dsv4_sparse.benchmarking import json_path, run_header, save_json

    out_path = json_path(JSON_NAME, args.json) or os.path.join(ROOT, "gpu_check_out", JSON_NAME)
    save_json(JSON_NAME, dict(header=run_header(ROOT, packages=("sglang",)), kit=rows, graph=graph_rows), out_path)
    print(f"rows saved to {out_path}", flush=True)
    if args.markdown:
        print("\n".join(_markdown(dict(kit=rows, graph=graph_rows))))
    return _summary(rows, graph_rows, heads_list)


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


def _markdown(saved) -> list[str]:
    """One row per head count (every ratio and route): cases, verdicts and the worst errors on the kit's scale."""
    from sglang_dsv4_sparse.benchmarking import header_line, markdown_table

    rows, graph_rows = saved["kit"], saved.get("graph", [])
    table = []
    for heads in sorted({r["heads"] for r in rows}):
        sel = [r for r in rows if r["heads"] == heads]
        ran = [r for r in sel if "ours_vs_ref" in r]
        counts = [sum(r["status"] in status for r in sel) for status in (("pass",), ("skip",), ("FAIL", "ERROR"))]

        def worst(key):
            return f"{max(r[key] for r in ran):.3f}" if ran else "-"

        table.append([heads, len(sel), *counts, worst("ours_vs_ref"), worst("sglang_vs_ref"), worst("ours_vs_sglang")])
    lines = [header_line(saved.get("header")), ""]
    lines += markdown_table(["heads", "cases", "pass", "skip", "fail", "ours vs reference", "SGLang vs reference",
                             "ours vs SGLang"], table)
    if graph_rows:
        runs = [f"{sum(r['status'] == 'pass' for r in graph_rows if r['backend'] == name)}"
                f"/{sum(r['backend'] == name for r in graph_rows)}" for name in ("ours", "sglang")]
        lines += ["", f"The kit's CUDA-graph decode runner (64 heads): {runs[0]} cases pass on ours, {runs[1]} on SGLang's."]
    for why in sorted({r["why"] for r in rows if r["status"] == "skip"}):
        lines += ["", f"Skipped for both backends: {why}."]
    return lines


def _summary(rows, graph_rows, heads_list) -> int:
    print("\n== SGLang DSv4 attention kit, both backends (worst |diff| / kit tolerance; <= 1 passes)")
    print(f"{'heads':>5} {'ratio':>5} {'route':>6} {'cases':>5} {'pass':>4} {'skip':>4} {'fail':>4}"
          f" {'ours/ref':>8} {'sgl/ref':>8} {'ours/sgl':>8}")
    bad = 0
    for heads in heads_list:
        for ratio in (0, 4, 128):
            for route in ("sparse", "paged"):
                sel = [r for r in rows if r["heads"] == heads and r["ratio"] == ratio and r["route"] == route]
                if not sel:
                    continue
                ran = [r for r in sel if "ours_vs_ref" in r]
                fails = [r for r in sel if r["status"] in ("FAIL", "ERROR")]
                bad += len(fails)

                def worst(key):
                    return f"{max(r[key] for r in ran):8.3f}" if ran else f"{'-':>8}"

                print(f"{heads:>5} {ratio:>5} {route:>6} {len(sel):>5} {sum(r['status'] == 'pass' for r in sel):>4}"
                      f" {sum(r['status'] == 'skip' for r in sel):>4} {len(fails):>4}"
                      f" {worst('ours_vs_ref')} {worst('sglang_vs_ref')} {worst('ours_vs_sglang')}")
    for r in rows:
        if r["status"] in ("FAIL", "ERROR"):
            print(f"  {r['status']}: {r['case']} c{r['ratio']} {r['route']} h{r['heads']}: {r.get('why', '')}")
    if graph_rows:
        print("\n== the kit's CUDA-graph decode runner (64 heads)")
        for name in ("ours", "sglang"):
            sel = [r for r in graph_rows if r["backend"] == name]
            fails = [r for r in sel if r["status"] != "pass"]
            bad += len(fails) if name == "ours" else 0
            print(f"{name:>7}: {len(sel) - len(fails)}/{len(sel)} pass")
            for r in fails:
                print(f"  FAIL {r['case']} c{r['ratio']}: {r.get('why', '')}")
    skipped = sorted({r["why"] for r in rows if r["status"] == "skip"})
    for why in skipped:
        print(f"skipped (both backends): {why}")
    print(f"kit matrix: {'all passed' if bad == 0 else f'{bad} failed'}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
