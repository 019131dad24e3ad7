"""scripts/bench_sglang_verify.py's tables from a saved run: the A/B, the --breakdown and the --sweep tables.

The rows are made up here (their figures mean nothing); what is checked is that every saved part is shown,
under the title that says what it is.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "scripts/bench_sglang_verify.py"

HEADER = dict(gpu="TEST GPU", date="2026-12-07", torch="2.11", triton="3.6", commit="abc1234", sglang="0.5.23",
              copy_tbs=2.5)


def _row(kind, heads, with_parts):
    ratios = ("c0", "c4", "c128") if kind == "verify" else ("c0",)
    row = dict(kind=kind, heads=heads, bs=8, ntok=4, ctx=8192, bytes_sglang=17_940_480, bytes_ours=11_703_360,
               max_diff=0.002, max_diff_static=0.002)
    for i, name in enumerate(("sglang", "ours", "ours_static")):
        row[name] = dict(route="sglang" if name != "ours_static" else "verify", step=0.060 + 0.01 * i)
        if with_parts:
            row[name]["layers_us"] = {r: 11.5 + i + j for j, r in enumerate(ratios)}
            row[name]["kernels_us"] = {"flash_fwd_splitkv_mla_kernel": 30.25, "other": 4.0, "total": 34.25 + i}
    if with_parts:
        row["ours_static"]["sweep"] = {
            r: dict(default=21.5, best="n32w4s2/8", best_us=9.75, decode_per_token_us=17.25,
                    cells={"default/rule": 21.5, "n32w4s2/8": 9.75, "n64w8s2/64": "OutOfResources"})
            for r in ratios
        }
    return row


def _show(tmp_path, rows):
    saved = tmp_path / "verify.json"
    saved.write_text(json.dumps(dict(header=HEADER, rows=rows)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, SCRIPT, "--from-json", str(saved), "--markdown"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_breakdown_and_sweep_tables(tmp_path):
    text = _show(tmp_path, [_row("verify", 8, True), _row("draft_extend", 8, True)])
    assert "Target verify, one CUDA-graph replay" in text and "Draft extend, one CUDA-graph replay" in text
    assert "Breakdown (us, SGLang / ours / static)" in text
    # Each layer as SGLang / ours / static, the replay's kernel total and the static variant's largest kernel.
    assert "| verify | 8 | 8 | 4 | 8192 | 11.5 / 12.5 / 13.5 | 12.5 / 13.5 / 14.5 | 13.5 / 14.5 / 15.5 |" in text
    assert "34.2 / 35.2 / 36.2" in text and "flash_fwd_splitkv_mla_kernel 30.2" in text
    assert "| draft_extend | 8 | 8 | 4 | 8192 | 11.5 / 12.5 / 13.5 | - / - / - | - / - / - |" in text
    assert "Verify kernel alone (--sweep)" in text
    assert "| verify | 8 | 8 | 4 | 8192 | c128 | 21.5 | 9.8 | n32w4s2/8 | 17.2 |" in text


def test_without_breakdown_no_breakdown_tables(tmp_path):
    text = _show(tmp_path, [_row("verify", 64, False)])
    assert "Target verify, one CUDA-graph replay" in text
    assert "Breakdown" not in text and "--sweep" not in text


def test_kernel_label_drops_templates_and_parameters():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_sglang_verify as verify
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert verify._kernel_label("void flash::fwd<cute::tuple<int>, 64>(Params)") == "void flash::fwd"
    assert verify._kernel_label("_sparse_verify_paged_kernel") == "_sparse_verify_paged_kernel"
    assert len(verify._kernel_label("k" * 100)) == 48


def test_sweep_times_each_setting_on_the_recorded_call():
    # One verify call (2 draft tokens of one request, a window-only layer) recorded through the wrapper,
    # then swept over two settings with the host clock: what the GPU sweep does with CUDA-graph replays.
    import torch

    from sglang_dsv4_sparse import layout as L
    from sglang_dsv4_sparse.benchmarking import events_ms
    from sglang_dsv4_sparse.kernels.sparse_attn import verify_paged
    from sglang_dsv4_sparse.kernels.sparse_attn.configs import KernelConfig
    from sglang_dsv4_sparse.random_inputs import written_cache

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_sglang_verify as verify
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    gen = torch.Generator().manual_seed(7)
    page = 64
    ids = torch.randperm(2 * page, generator=gen)[:9]
    cache, _ = written_cache(2, page, ids, gen)
    # Token 0 at cached length 7 sees positions 6..0, token 1 positions 7..1 (newest first).
    pos_ids = ids[:8]
    swa = torch.full((2, 128), -1, dtype=torch.int32)
    swa[0, :7] = pos_ids[:7].flip(0).to(torch.int32)
    swa[1, :8] = pos_ids[:8].flip(0).to(torch.int32)
    lens = torch.tensor([7, 8], dtype=torch.int32)
    q = (torch.randn(2, 16, L.HEAD_DIM, generator=gen) * 0.5).to(torch.bfloat16)
    qsl = torch.tensor([0, 2], dtype=torch.int32)
    with verify.recorded_verify_calls() as calls:
        expected, _ = verify_paged.sparse_mla_verify_paged(q, qsl, cache, swa, lens, swa_page_size=page)
    assert verify_paged.sparse_mla_verify_paged.__name__ == "sparse_mla_verify_paged"  # restored
    assert len(calls) == 1
    swept = verify.sweep_verify_calls(calls, (0,), configs=[None, KernelConfig(16, 4, 1)], splits_list=(None, 2),
                                      timer_ms=lambda fn: events_ms(fn, 1))
    cells = swept["c0"]["cells"]
    assert set(cells) == {"default/rule", "default/2", "n16w4s1/rule", "n16w4s1/2"}
    assert all(isinstance(v, float) and v > 0 for v in cells.values())
    assert swept["c0"]["best"] in cells and swept["c0"]["best_us"] == min(cells.values())
    assert swept["c0"]["default"] == cells["default/rule"]
    assert isinstance(swept["c0"]["decode_per_token_us"], float)  # the paged decode kernel on the same rows
    # ... which are the same rows: each draft token, as its own decode query, gives the verify kernel's answer.
    from testing import assert_attention_close

    per_token, _ = verify._decode_per_token(*calls[0])()
    assert_attention_close(per_token[:, 0], expected, "decode kernel per token")
    assert torch.isfinite(expected.float()).all()
    assert verify.sweep_configs()[0] is not None and len(set(verify.sweep_configs())) == len(verify.sweep_configs())
