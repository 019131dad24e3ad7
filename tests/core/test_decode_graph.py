"""The paged route (plan + layers) captured once in a CUDA graph and replayed
for later decode steps, as SGLang's decode graph runner does (GPU only)."""

import pytest
import torch

from sglang_dsv4_sparse.core.forward import decode_layer
from sglang_dsv4_sparse.dispatch import KernelChoice
from sglang_dsv4_sparse.core.plan import StepInputs, build_paged_plan, topk_to_token_ids
from sglang_dsv4_sparse.stack_check import StackConfig, build_stack, deterministic_topk, layer_q
from testing import assert_attention_close

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kernels", ["auto", "triton"])
@pytest.mark.parametrize("heads", [16, 64])
def test_decode_step_replays_from_a_cuda_graph(monkeypatch, kernels, heads):
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_KERNELS", kernels)
    # The core's default choice is read from the environment once per device: pass this test's own.
    choice = KernelChoice.from_env("cuda")
    cfg = StackConfig(ratios=(0, 4, 128), heads=heads, topk=64, prompt_len=600, decode_steps=4)
    stack = build_stack(cfg, "cuda")
    dev = stack.device
    seq = torch.zeros(1, dtype=torch.int32, device=dev)
    pos = torch.zeros(1, dtype=torch.int64, device=dev)
    tables = {r: stack.page_tables[r][stack.pool_row][None] for r in (4, 128)}
    inputs = StepInputs(
        seq_lens=seq, extend_lens=torch.ones(1, dtype=torch.int32, device=dev),
        req_pool_indices=torch.tensor([stack.pool_row], dtype=torch.int32, device=dev),
        req_to_token=stack.req_to_token, full_to_swa=stack.full_to_swa, compressed_page_tables=tables,
        seq_lens_cpu=[cfg.prompt_len + cfg.decode_steps], extend_lens_cpu=[1], positions=pos,
    )
    qs = [torch.empty(1, heads, 512, dtype=torch.bfloat16, device=dev) for _ in cfg.ratios]
    topk = torch.empty(1, cfg.topk, dtype=torch.int32, device=dev)

    def load(p):
        seq.fill_(p + 1)
        pos.fill_(p)
        p_t = torch.tensor([p], device=dev)
        for layer, q in enumerate(qs):
            q.copy_(layer_q(stack, layer, p_t))
        topk.copy_(deterministic_topk(stack, 1, p_t))

    def step():
        plan = build_paged_plan(inputs)
        # The C4 top-k as SGLang's indexer hands it to the paged route: cache ids and lengths.
        ids, lens = topk_to_token_ids(plan, 4, topk)
        return [
            decode_layer(plan, qs[l], stack.swa_caches[l], r, stack.compressed_caches[l],
                         ids[:, 0] if r == 4 else None, stack.sinks[l], topk_lengths=lens if r == 4 else None,
                         choice=choice)
            for l, r in enumerate(cfg.ratios)
        ]

    load(cfg.prompt_len)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # compile and pick configs outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for p in range(cfg.prompt_len + 1, cfg.prompt_len + cfg.decode_steps):
        load(p)
        graph.replay()
        torch.cuda.synchronize()
        eager = step()
        for layer, (got, want) in enumerate(zip(captured, eager)):
            assert_attention_close(got, want.float(), f"layer {layer} at position {p}")
