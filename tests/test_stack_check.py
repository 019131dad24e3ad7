"""The tiny CPU version of scripts/e2e_stack.py: a 6-layer stack through the core."""

import torch

from sglang_dsv4_sparse.stack_check import StackConfig, build_stack, compare_chunkings, max_rel_err, run_prompt

ON_GPU = torch.cuda.is_available()


def test_chunked_prefill_and_decode_match_the_dense_reference(device):
    # 130 tokens: the C128 layer sees one compressed row from position 127 on;
    # the C4 cache is placed past 2**31 bytes (untouched pages cost no memory).
    # One layer of each ratio keeps the interpreter's share near a minute;
    # scripts/e2e_stack.py runs the full [0, 4, 128, 4, 128, 0] stack on a GPU.
    ratios = (0, 4, 128, 4, 128, 0) if ON_GPU else (0, 4, 128)
    cfg = StackConfig(ratios=ratios, heads=64 if ON_GPU else 4, topk=8, prompt_len=130, decode_steps=1, huge_cache_bytes=2**31)
    stack = build_stack(cfg, device)
    assert stack.compressed_caches[1].numel() > 2**31
    chunked, results = run_prompt(stack, 65, log=lambda _: None)
    assert len(results) == len(ratios) * 3
    assert max_rel_err(results) <= 1e-2, [(r.what, r.layer, r.rel_err) for r in results]
    whole, _ = run_prompt(stack, 130, check=False, log=lambda _: None)
    assert compare_chunkings(chunked, whole) <= 1e-2
