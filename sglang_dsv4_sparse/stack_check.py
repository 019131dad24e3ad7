"""End-to-end check of the core on a synthetic stack of DSv4 attention layers.

A stack of layers with compress ratios such as ``[0, 4, 128, 4, 128, 0]`` and
real V4 caches written through the layout quantizer runs one request's prompt
through chunked prefill (the sparse prefill route) and then decode steps (the
paged route). Every layer's output is compared with the dense fp32 reference
over the dequantized cache, and two chunkings of the same prompt are compared
with each other.

Everything a query sees is a deterministic function of its position, not of
the chunking: its q rows come from a fixed table indexed by position and
layer, and a C4 layer's top-k is the top-``k`` of a fixed pseudo-random score
of (position, compressed row), with a few -1 holes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import layout as L
from .core.forward import Workspace, decode_layer, prefill_layer
from .core.plan import StepInputs, build_paged_plan, build_prefill_plan, topk_to_token_ids
from .reference import layer_attention_reference
from .random_inputs import random_rows

Q_TABLE_ROWS = 509  # a prime, so (position, layer) pairs spread over the table
HOLE_RATE = 0.03


@dataclass
class StackConfig:
    ratios: Sequence[int] = (0, 4, 128, 4, 128, 0)
    heads: int = 64
    topk: int = 512
    prompt_len: int = 32768
    decode_steps: int = 16
    window: int = L.SWA_WINDOW
    # Place one C4 cache's pages past this many bytes (0: no huge cache).
    huge_cache_bytes: int = 0
    seed: int = 0


@dataclass
class Stack:
    """Caches, page tables and per-layer tensors of one request."""

    config: StackConfig
    device: torch.device
    req_to_token: torch.Tensor
    full_to_swa: torch.Tensor
    pool_row: int
    swa_caches: List[torch.Tensor]
    compressed_caches: List[Optional[torch.Tensor]]
    page_tables: Dict[int, torch.Tensor]
    q_table: torch.Tensor  # [Q_TABLE_ROWS, h, 512]
    sinks: List[torch.Tensor]
    score_seeds: List[float] = field(default_factory=list)


def _permuted(n: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.randperm(n, generator=gen).to(device)


def build_stack(config: StackConfig, device) -> Stack:
    device = torch.device(device)
    gen = torch.Generator().manual_seed(config.seed)
    total = config.prompt_len + config.decode_steps
    pool_rows, pool_row = 3, 1
    full_size = total * 2
    req_to_token = torch.randint(0, full_size, (pool_rows, total), generator=gen)
    req_to_token[pool_row] = torch.randperm(full_size, generator=gen)[:total]
    swa_page = L.SWA_PAGE_SIZE
    swa_pages = -(-full_size // swa_page)
    full_to_swa = torch.randperm(swa_pages * swa_page, generator=gen)[:full_size]
    page_tables, compressed_caches, swa_caches, sinks = {}, [], [], []
    for ratio in set(r for r in config.ratios if r):
        page_size = L.C4_PAGE_SIZE if ratio == 4 else L.C128_PAGE_SIZE
        pages_needed = -(-(total // ratio + 1) // page_size)
        page_tables[ratio] = torch.randperm(pages_needed * 2, generator=gen)[:pages_needed][None, :].repeat(pool_rows, 1)
    huge_done = False
    for layer, ratio in enumerate(config.ratios):
        positions = torch.arange(total)
        swa_cache = torch.empty((swa_pages, L.page_bytes(swa_page)), dtype=torch.uint8, device=device)
        rows = random_rows(total, gen)
        L.quantize_into_paged_cache(swa_cache, full_to_swa[req_to_token[pool_row, positions]].to(device), rows.to(device), swa_page)
        swa_caches.append(swa_cache)
        sinks.append((torch.randn(config.heads, generator=gen) * 0.5).to(device))
        if not ratio:
            compressed_caches.append(None)
            continue
        page_size = L.C4_PAGE_SIZE if ratio == 4 else L.C128_PAGE_SIZE
        table = page_tables[ratio]
        num_pages = int(table.max()) + 1
        n_rows = total // ratio
        if ratio == 4 and config.huge_cache_bytes and not huge_done:
            # Shift this layer's pages past the huge offset: every byte it reads needs int64.
            shift = config.huge_cache_bytes // L.page_bytes(page_size) + 1
            cache = torch.empty((num_pages + shift, L.page_bytes(page_size)), dtype=torch.uint8, device=device)
            table = table + shift
            page_tables[(ratio, layer)] = table
            huge_done = True
        else:
            cache = torch.empty((num_pages, L.page_bytes(page_size)), dtype=torch.uint8, device=device)
        j = torch.arange(n_rows)
        ids = table[pool_row, j // page_size] * page_size + j % page_size
        L.quantize_into_paged_cache(cache, ids.to(device), random_rows(n_rows, gen).to(device), page_size)
        compressed_caches.append(cache)
    q_table = (torch.randn(Q_TABLE_ROWS, config.heads, L.HEAD_DIM, generator=gen) * 0.6).to(torch.bfloat16).to(device)
    return Stack(
        config, device, req_to_token.to(device), full_to_swa.to(device), pool_row, swa_caches, compressed_caches,
        {k: v.to(device) for k, v in page_tables.items()}, q_table, sinks,
        [float(torch.rand((), generator=gen)) * 100 for _ in config.ratios],
    )


def layer_q(stack: Stack, layer: int, positions: torch.Tensor) -> torch.Tensor:
    return stack.q_table[(positions * 7 + layer * 131) % Q_TABLE_ROWS]


def deterministic_topk(stack: Stack, layer: int, positions: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Top-k of a fixed pseudo-random score over each query's readable C4 rows; -1 past them and at holes."""
    k = stack.config.topk
    out = torch.full((positions.numel(), k), -1, dtype=torch.int32, device=positions.device)
    seed = stack.score_seeds[layer]
    for a in range(0, positions.numel(), block):
        p = positions[a : a + block].to(torch.int64)
        n = torch.div(p + 1, 4, rounding_mode="floor")
        width = max(int(n.max()), 1)
        j = torch.arange(width, device=p.device)
        score = torch.frac(torch.sin(p[:, None].double() * 12.9898 + j[None, :].double() * 78.233 + seed) * 43758.5453)
        score = score.masked_fill(j[None, :] >= n[:, None], -1.0)
        kk = min(k, width)
        top = torch.topk(score, kk, dim=1)
        idx = torch.where(top.values >= 0, top.indices, -1)
        hole = torch.frac(torch.sin(p[:, None].double() * 3.7 + torch.arange(kk, device=p.device)[None, :] * 1.3) * 9.1e3).abs() < HOLE_RATE
        out[a : a + block, :kk] = torch.where(hole, -1, idx).to(torch.int32)
    return out


def step_inputs(stack: Stack, start: int, end: int, layer_tables: Optional[int] = None) -> StepInputs:
    device = stack.device
    # Page tables are per request: this step's one request is pool row ``pool_row``.
    tables = {
        r: stack.page_tables.get((r, layer_tables), stack.page_tables[r])[stack.pool_row][None]
        for r in stack.page_tables
        if isinstance(r, int)
    }
    return StepInputs(
        seq_lens=torch.tensor([end], dtype=torch.int32, device=device),
        extend_lens=torch.tensor([end - start], dtype=torch.int32, device=device),
        req_pool_indices=torch.tensor([stack.pool_row], dtype=torch.int32, device=device),
        req_to_token=stack.req_to_token,
        full_to_swa=stack.full_to_swa,
        compressed_page_tables=tables,
        seq_lens_cpu=[end],
        extend_lens_cpu=[end - start],
        window=stack.config.window,
    )


def _layer_tables_key(stack: Stack, layer: int) -> Optional[int]:
    return layer if (stack.config.ratios[layer], layer) in stack.page_tables else None


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm().clamp_min(1e-30))


@dataclass
class StepResult:
    what: str  # "prefill [a, b)" or "decode pos p"
    layer: int
    ratio: int
    rel_err: float
    ms: float


def run_prompt(
    stack: Stack,
    chunk: int,
    *,
    check: bool = True,
    c4_rows: str = "auto",
    log: Callable[[str], None] = print,
) -> tuple[Dict[int, torch.Tensor], List[StepResult]]:
    """Prefill the prompt in chunks, then decode; returns per-layer prompt outputs and per-step results."""
    cfg = stack.config
    workspace = Workspace(stack.device)
    results: List[StepResult] = []
    outputs: Dict[int, List[torch.Tensor]] = {layer: [] for layer in range(len(cfg.ratios))}
    steps = [(s, min(s + chunk, cfg.prompt_len)) for s in range(0, cfg.prompt_len, chunk)]
    steps += [(p, p + 1) for p in range(cfg.prompt_len, cfg.prompt_len + cfg.decode_steps)]
    for start, end in steps:
        is_decode = start >= cfg.prompt_len
        positions = torch.arange(start, end, device=stack.device)
        plans = {}
        for layer, ratio in enumerate(cfg.ratios):
            key = _layer_tables_key(stack, layer)
            if key not in plans:
                inputs = step_inputs(stack, start, end, key)
                plans[key] = (inputs, build_paged_plan(inputs) if is_decode else build_prefill_plan(inputs))
            inputs, plan = plans[key]
            q = layer_q(stack, layer, positions)
            topk = deterministic_topk(stack, layer, positions) if ratio == 4 else None
            args = (q, stack.swa_caches[layer], ratio, stack.compressed_caches[layer], topk, stack.sinks[layer])
            # What SGLang's indexer hands the paged route: C4-cache ids, not request-local rows.
            decode_args = _paged_c4_args(plan, args) if is_decode else None
            t0 = torch.cuda.Event(enable_timing=True) if stack.device.type == "cuda" else None
            t1 = torch.cuda.Event(enable_timing=True) if t0 is not None else None
            wall = time.perf_counter()
            if t0 is not None:
                t0.record()
            if is_decode:
                out = decode_layer(plan, *decode_args)
            else:
                out = prefill_layer(plan, workspace, *args, c4_rows=c4_rows)
            if t0 is not None:
                t1.record()
                torch.cuda.synchronize()
                ms = t0.elapsed_time(t1)
            else:
                ms = (time.perf_counter() - wall) * 1e3
            err = float("nan")
            if check:
                ref = layer_attention_reference(inputs, *args)
                err = _rel_err(out, ref)
            if not is_decode:
                outputs[layer].append(out)
            what = f"decode pos {start}" if is_decode else f"prefill [{start}, {end})"
            results.append(StepResult(what, layer, ratio, err, ms))
        if not is_decode or start == cfg.prompt_len:
            worst = max((r.rel_err for r in results[-len(cfg.ratios):]), default=float("nan"))
            log(f"  {results[-1].what:>24}: {len(cfg.ratios)} layers, worst rel err {worst:.2e}")
    return {layer: torch.cat(chunks) for layer, chunks in outputs.items() if chunks}, results


def _paged_c4_args(plan, args: tuple) -> tuple:
    """``args`` for ``decode_layer``: a C4 layer's request-local top-k turned into C4-cache ids and lengths."""
    q, swa_cache, ratio, compressed_cache, topk, sink = args
    if ratio != 4:
        return args
    ids, lens = topk_to_token_ids(plan, 4, topk)
    return q, swa_cache, ratio, compressed_cache, ids[:, 0], sink, lens


def compare_chunkings(a: Dict[int, torch.Tensor], b: Dict[int, torch.Tensor]) -> float:
    """Worst relative difference between two runs' per-layer prompt outputs."""
    return max(_rel_err(a[layer], b[layer].float()) for layer in a)


def max_rel_err(results: Sequence[StepResult]) -> float:
    errs = [r.rel_err for r in results if not math.isnan(r.rel_err)]
    return max(errs) if errs else float("nan")
