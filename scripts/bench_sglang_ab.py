"""Per-layer and per-step A/B: this package's backend against SGLang 0.5.23's DeepseekV4AttnBackend.

    python scripts/bench_sglang_ab.py [--quick] [--json FILE] [--markdown] [--breakdown]
                                      [--route-table FILE] [--heads 8,16]

Both backends run on one serving-sized DSv4 pool (SGLang's
``DeepSeekV4TokenToKVPool``: an SWA, a C4 and a C128 layer, fp8 V4 caches
filled with quantized random rows) through SGLang's own ``ForwardBatch``es,
built as its attention kit builds them, with the same query tensors and the
same C4 top-k (random picks written where SGLang's indexer writes them).

* EXTEND: chunks of 2k, 8k and 32k tokens after a prefix of 0, 8k, 32k,
  120k or 1M tokens, one request or four (four only up to 8k chunks: SGLang's
  compressor planner rejects four 32k chunks); a MIXED batch of 32 decodes
  and one 8k chunk. ``meta`` is ``init_forward_metadata``; ``c0``, ``c4``,
  ``c128`` one layer's ``forward`` each (median of repeated calls, CUDA
  events); ``step`` the wall time of metadata + one layer of each kind,
  synchronized (SGLang builds its sparse-prefill chunk cache in the step's
  first sparse layer, and ours builds its plan in its first layer on one of
  its routes, so only ``step`` compares everything). ``plan`` is our plan's
  own cost on top of SGLang's chunk cache.
* DECODE: batches of 1 / 8 / 64 / 128 at 8k and 128k tokens of context,
  captured in a CUDA graph (``init_forward_metadata_out_graph`` outside,
  ``init_forward_metadata_in_graph``, a stand-in indexer that copies the C4
  picks, and one layer of each kind inside) and replayed; ``step`` is the
  replay.

Heads 8 and 16 are a tensor-parallel rank's: the query is zero-padded to 64
for both backends, as the DSv4 model hands it over. ``ours`` is the backend
as shipped (``SGLANG_DSV4_SPARSE_PREFILL_ROUTE=auto``: each layer kind on the
route the route table gives for the step's shape); below 64 heads extends also
run ``ours_static`` (``=ours``: our routes on every layer), whose per-layer
times and plan cost, beside SGLang's, are what ``--route-table FILE`` writes
as the route table (``sglang_dsv4_sparse/route_tables/``). Rows run SGLang,
then ours, back to back.

``--breakdown`` profiles one step of a few rows per backend (PyTorch
profiler): host time and GPU time of the metadata, our plan and each layer,
the GPU time split into staging (dequant, index rows) and attention kernels;
it also saves both backends' traces of one row and prints
``dsv4-kernel-diff``'s comparison of them. Imports the test-only stand-ins
from ``tests/sglang``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "sglang"))
sys.path.insert(0, ROOT)

import kit_runner  # noqa: E402
import stand_ins  # noqa: E402

os.environ.setdefault("SGLANG_FP8_PAGED_MQA_LOGITS_TORCH", "1")
os.environ.setdefault("SGLANG_OPT_USE_TOPK_V2", "0")

import torch  # noqa: E402

PAGE = 256  # SGLang's full-cache page
RATIOS = (0, 4, 128)  # layer i of the pool has ratio RATIOS[i]
TOPK = 512  # DSv4-Flash's index_topk
KERNEL_WIDTH = 64  # the query width the model hands over up to 64 heads
SWA_POOL_TOKENS = 1 << 20  # SWA-cache rows; the full-to-SWA map folds full ids onto them


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few rows of each kind")
    p.add_argument("--tiny", action="store_true", help="CPU plumbing check: tiny shapes, our backend only")
    p.add_argument("--json", default=None, help="default: $OUT/bench_sglang_ab.json")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--from-json", default=None, help="print the tables of an earlier run's JSON and exit")
    p.add_argument("--breakdown", action="store_true", help="profile a few rows: host / GPU time by part")
    p.add_argument("--route-table", default=None,
                   help="write the route table (per-layer times of SGLang's route and ours) to FILE")
    p.add_argument("--heads", default=None, help="comma-separated head counts (default: 8,16,64,128)")
    p.add_argument("--skip-decode", action="store_true", help="extends only")
    p.add_argument("--no-variants", action="store_true", help="SGLang and ours only (no ours_static columns)")
    return p.parse_args()


# A MIXED row: this many decode requests at MIXED_CONTEXT tokens beside one chunk of MIXED_CHUNK.
MIXED_DECODES, MIXED_CONTEXT, MIXED_CHUNK = 32, 8192, 8192
PREFIXES = (0, 8192, 32768, 120_000, 1_000_000)


def plan_rows(args):
    """(extends as (chunk, prefix, requests), decodes as (batch, context), head counts); a chunk of
    None is the MIXED row."""
    if args.tiny:
        rows = ([(16, 0, 1), (16, 300, 2), (None, 0, 1)], [(1, 300), (2, 600)], (16,))
    elif args.quick:
        rows = ([(8192, 0, 1), (8192, 120_000, 1), (32768, 1_000_000, 1), (None, 0, 1)],
                [(1, 8192), (64, 8192)], (8, 16, 64))
    else:
        extends = [(c, p, n) for c in (2048, 8192, 32768) for p in PREFIXES for n in (1, 4)
                   if not (n == 4 and (c > 8192 or p > 120_000))]
        rows = (extends + [(None, 0, 1)], [(b, ctx) for b in (1, 8, 64, 128) for ctx in (8192, 131072)],
                (8, 16, 64, 128))
    if args.heads:
        rows = rows[:2] + (tuple(int(h) for h in args.heads.split(",")),)
    if args.skip_decode:
        rows = (rows[0], [], rows[2])
    return rows


def extend_batch(chunk, prefix, nreq, tiny=False):
    """(prefix lengths, extend lengths, mode) of an extend row; chunk None is the MIXED row."""
    if chunk is None:
        decodes, context, new = (2, 40, 16) if tiny else (MIXED_DECODES, MIXED_CONTEXT, MIXED_CHUNK)
        return [context - 1] * decodes + [0], [1] * decodes + [new], "MIXED"
    return [prefix] * nreq, [chunk] * nreq, "EXTEND"


# ---------------------------------------------------------------------------
# The deployment: one pool, req_to_token rows rewritten per row of the table
# ---------------------------------------------------------------------------


class Deployment:
    def __init__(self, *, max_reqs: int, max_context: int, full_tokens: int, device: str):
        from sglang.srt.mem_cache.deepseek_v4_memory_pool import DeepSeekV4TokenToKVPool
        from sglang.srt.mem_cache.memory_pool import ReqToTokenPool
        from sglang.test.kits.attention_unittest.attention_methods import dsv4_attention as kit

        self.kit = kit
        self.device = device
        self.max_context = -(-max_context // PAGE) * PAGE
        self.full_tokens = -(-full_tokens // PAGE) * PAGE + PAGE  # page 0 stays unused, as in SGLang
        case = kit.DSV4AttentionCase(
            name="sglang_ab", backend="dsv4", forward_mode=_mode("EXTEND"), num_heads=KERNEL_WIDTH,
            page_size=PAGE, prefix_lens=(0,) * max_reqs, extend_lens=(1,) * max_reqs,
        )
        config = kit.TinyDSV4ModelConfig(num_heads=KERNEL_WIDTH, context_len=self.max_context,
                                         compression_ratios=list(RATIOS))
        # The kit's runner, with its small pools swapped for serving-sized ones.
        self.runner = kit.MockDSV4ModelRunner(
            case=case, model_config=config, dtype=torch.bfloat16, device=device, max_context_len=PAGE,
            swa_size=4 * PAGE, runner_batch_size=max_reqs, compression_ratios=list(RATIOS),
            disable_cuda_graph=False,
        )
        self.runner.req_to_token_pool = ReqToTokenPool(
            size=max_reqs, max_context_len=self.max_context, device=device, enable_memory_saver=False
        )
        pool = DeepSeekV4TokenToKVPool(
            max_num_reqs=max_reqs, swa_size=SWA_POOL_TOKENS, c4_size=self.full_tokens // 4,
            c128_size=self.full_tokens // 128, c4_state_pool_size=max_reqs, c128_state_pool_size=max_reqs,
            page_size=PAGE, swa_page_size=PAGE, dtype=torch.float8_e4m3fn, c4_state_dtype=torch.bfloat16,
            c128_state_dtype=torch.bfloat16, qk_nope_head_dim=448, qk_rope_head_dim=64, indexer_head_dim=128,
            layer_num=len(RATIOS), device=device, enable_memory_saver=False, compression_ratios=list(RATIOS),
            kv_source_layers=[], full_size=self.full_tokens,
        )
        pool.register_mapping(torch.arange(self.full_tokens, dtype=torch.int64, device=device) % SWA_POOL_TOKENS)
        self.runner.token_to_kv_pool = pool
        from sglang.srt.mem_cache.kv_index_translator import KVIndexTranslator

        self.runner.kv_index_translator = KVIndexTranslator(
            req_to_token=self.runner.req_to_token_pool.req_to_token,
            token_to_kv_pool_allocator=self.runner.token_to_kv_pool_allocator,
            token_to_kv_pool=pool, page_size=PAGE, device=device,
        )
        for layer, ratio in enumerate(RATIOS):
            if ratio:
                need = (self.full_tokens // PAGE) * (PAGE // ratio)
                have = pool.get_extra_key_buffer(layer).shape[0] * (PAGE // ratio)
                if have < need:
                    raise RuntimeError(f"C{ratio} cache holds {have} rows, the page table needs {need}")
        self._fill_caches()

    def _fill_caches(self) -> None:
        """Quantized random rows: a few pages written with the production recipe, tiled over each cache."""
        from sglang_dsv4_sparse import layout as L

        gen = torch.Generator(device=self.device).manual_seed(0)
        pool = self.runner.token_to_kv_pool
        for layer, ratio in enumerate(RATIOS):
            caches = [(pool.get_swa_key_buffer_radix(layer), PAGE)]
            if ratio:
                caches.append((pool.get_extra_key_buffer(layer), PAGE // ratio))
            for cache, page_size in caches:
                pages = cache.view(torch.uint8).view(cache.shape[0], -1)
                tile = min(16, pages.shape[0])
                rows = torch.randn(tile * page_size, 512, generator=gen, device=self.device).to(torch.bfloat16)
                template = L.new_cache(tile, page_size, device=self.device)
                L.quantize_into_paged_cache(template, torch.arange(tile * page_size, device=self.device), rows, page_size)
                flat = template.view(torch.uint8).view(tile, -1)[:, : pages.shape[1]]
                for start in range(0, pages.shape[0], tile):
                    n = min(tile, pages.shape[0] - start)
                    pages[start : start + n] = flat[:n]

    def layer(self, layer_id: int, real_heads: int):
        from sglang.srt.layers.radix_attention import RadixAttention

        return RadixAttention(num_heads=real_heads, head_dim=512, scaling=512**-0.5, num_kv_heads=1,
                              layer_id=layer_id, v_head_dim=512)

    def batch(self, mode: str, prefix: list, ext: list):
        """A ForwardBatch whose requests hold consecutive, page-aligned full-cache ids."""
        dev = self.device
        seq = [p + e for p, e in zip(prefix, ext)]
        req_to_token = self.runner.req_to_token_pool.req_to_token
        bases, base = [], PAGE
        for s in seq:
            if s > self.max_context:
                raise ValueError(f"a request of {s} tokens exceeds the deployment's {self.max_context}")
            bases.append(base)
            base += -(-s // PAGE) * PAGE
        if base > self.full_tokens:
            raise ValueError(f"the batch needs {base} full-cache ids, the pool has {self.full_tokens}")
        for r, (b, s) in enumerate(zip(bases, seq)):
            req_to_token[r, :s] = torch.arange(b, b + s, dtype=req_to_token.dtype, device=dev)
        locs = torch.cat([torch.arange(b + p, b + p + e) for b, p, e in zip(bases, prefix, ext)])
        fb = kit_runner.forward_batch(self.runner, mode, list(range(len(seq))), prefix, ext, locs, dev)
        return fb, bases, seq

    def c4_picks(self, prefix, ext, bases, gen):
        """Random request-local picks (the indexer's raw output) and the same as C4-cache ids."""
        dev = self.device
        raw_rows, ids_rows = [], []
        per_page = PAGE // 4
        for p, e, b in zip(prefix, ext, bases):
            pos = torch.arange(p, p + e, device=dev)
            lens = torch.clamp((pos + 1) // 4, max=TOPK)
            local = (torch.rand(e, TOPK, generator=gen, device=dev) * ((pos + 1) // 4).clamp_min(1)[:, None]).long()
            local = torch.where(torch.arange(TOPK, device=dev)[None, :] < lens[:, None], local, -1)
            raw_rows.append(local)
            # Request pages are consecutive from full page b // PAGE; C4 page p holds full page p's rows.
            ids_rows.append(torch.where(local >= 0, (b // PAGE) * per_page + local, -1))
        return torch.cat(raw_rows).to(torch.int32), torch.cat(ids_rows).to(torch.int32)


def _mode(name):
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    return getattr(ForwardMode, name)


def _factories():
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    from sglang_dsv4_sparse.sglang_backend import backend_class

    return {"sglang": DeepseekV4AttnBackend, **{name: backend_class() for name in ("ours", *VARIANTS)}}


# Our backend run again under another setting, where it differs from ``ours``: extends below 64
# heads and decodes (``auto`` hands decodes to SGLang's attention). ``ours_static``: our routes on
# every layer and step, the route table's measurements.
VARIANTS = {
    "ours_static": {"SGLANG_DSV4_SPARSE_PREFILL_ROUTE": "ours"},
}


def _names_for(names, heads, kind):
    return [n for n in names if n not in VARIANTS or heads < KERNEL_WIDTH or kind == "decode"]


class _variant_env:
    """The environment of a variant while it is built and runs."""

    def __init__(self, name):
        self.env = VARIANTS.get(name, {})

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _write_c4(backend, raw, ids):
    core = backend.forward_metadata.core_attn_metadata
    n = raw.shape[0]
    core.c4_sparse_page_indices[:n, : ids.shape[1]].copy_(ids)
    if core.c4_sparse_raw_indices is not None:
        core.c4_sparse_raw_indices[:n, : raw.shape[1]].copy_(raw)


def _query(num_tokens, heads, gen, device):
    q = torch.zeros(num_tokens, KERNEL_WIDTH if heads <= KERNEL_WIDTH else heads, 512, dtype=torch.bfloat16, device=device)
    q[:, :heads] = (torch.randn(num_tokens, heads, 512, generator=gen, device=device) * 0.5).to(torch.bfloat16)
    sink = torch.zeros(q.shape[1], device=device)
    sink[:heads] = torch.randn(heads, generator=gen, device=device)
    return q, sink


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _wall_ms(fn, device, reps):
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def at_rank_heads(backend, heads):
    """``backend`` as a rank of ``heads`` real heads builds it: our backend routes each step at metadata
    time by the heads the model config gives a rank (heads / TP). The deployment's one model config is at
    the kernel width (64), its layers at ``heads``."""
    if hasattr(backend, "_dsv4_router_heads"):
        backend._dsv4_router_heads = heads
    return backend


def bench_extend(dep, factory, name, heads, prefix, ext, reps, mode="EXTEND", breakdown=None):
    from sglang.srt.environ import envs

    from sglang_dsv4_sparse.benchmarking import events_ms
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    dev = dep.device
    gen = torch.Generator(device=dev).manual_seed(1)
    fb, bases, _ = dep.batch(mode, prefix, ext)
    raw, ids = dep.c4_picks(prefix, ext, bases, gen)
    q, sink = _query(sum(ext), heads, gen, dev)
    backend = at_rank_heads(factory(dep.runner), heads)
    layers = [dep.layer(i, heads) for i in range(len(RATIOS))]
    row = {}
    with torch.no_grad(), forward_context(ForwardContext(attn_backend=backend)), \
            envs.SGLANG_OPT_FLASHMLA_SPARSE_PREFILL.override(True):

        def init():
            backend.init_forward_metadata(fb)
            _write_c4(backend, raw, ids)

        def layer(i):
            return backend.forward(q=q, k=q, v=q, layer=layers[i], forward_batch=fb, compress_ratio=RATIOS[i],
                                   save_kv_cache=False, attn_sink=sink)

        def step():
            init()
            for i in range(len(RATIOS)):
                layer(i)

        step()  # compile, autotune, allocate
        if name != "sglang":
            step_state = backend._dsv4_step
            if step_state is None and name != "ours":
                raise RuntimeError("our backend left the step to SGLang")
            if name == "ours_static" and not step_state.c128_folds:
                raise RuntimeError("the C128 layer did not take the folded route")
            # ``ours`` (auto) leaves a step whose layers all take SGLang's route to SGLang whole.
            routes = {} if step_state is None else step_state.routes_by_heads.get((heads, q.shape[1]), {})
            row["routes"] = {str(r): routes.get(r, "sglang") for r in RATIOS}
        row["meta"] = _wall_ms(init, dev, reps)
        row["step"] = _wall_ms(step, dev, reps)
        init()
        for i, ratio in enumerate(RATIOS):
            row[f"c{ratio}"] = events_ms(lambda: layer(i), reps)
        if name != "sglang" and backend._dsv4_step is not None and backend._dsv4_step.plan is not None:
            row["plan"] = _wall_ms(lambda: _rebuild_plan(backend, heads), dev, reps)
        if breakdown is not None:
            breakdown[name] = profile_step(init, layer, backend if name != "sglang" else None, heads)
    del backend
    return row


def _rebuild_plan(backend, heads):
    """Our plan's own work, again: what the step's first layer on one of our routes adds to SGLang's chunk cache."""
    step = backend._dsv4_step
    step.plan, step.inputs = None, None
    step.c128_folds.clear()
    routes = next(r for (h, _), r in step.routes_by_heads.items() if h == heads)
    for ratio, route in sorted(routes.items()):
        if route != "sglang":
            step.prefill_plan(backend, ratio, route)
            if route == "folded":
                step.c128_fold(heads)


# Kernel names by what they do: staging (dequantize rows into the workspace, build index rows) or attention.
_STAGING = ("dequant", "combine", "swa_token", "index", "gather", "arange", "cumsum", "searchsorted", "copy", "fill")
_ATTENTION = ("flash", "sparse_mla", "shared_rows", "attn", "mla")


def _kernel_kind(name: str) -> str:
    low = name.lower()
    if any(k in low for k in _ATTENTION) and "dequant" not in low:
        return "attention"
    if "dequant" in low:
        return "dequant"
    if any(k in low for k in _STAGING):
        return "index"
    return "other"


def profile_part(fn, reps=3):
    """Host ms (time to issue ``fn``), GPU ms (kernel time) and GPU ms by kind, per call."""
    import torch.profiler as tp

    fn()
    _sync("cuda")
    host = 0.0
    with tp.profile(activities=[tp.ProfilerActivity.CPU, tp.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            host += time.perf_counter() - t
        _sync("cuda")
    kinds = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kind = _kernel_kind(e.name)
            kinds[kind] = kinds.get(kind, 0.0) + e.time_range.elapsed_us() / 1e3 / reps
    return dict(host=host * 1e3 / reps, gpu=sum(kinds.values()), **{f"gpu_{k}": v for k, v in kinds.items()})


def profile_step(init, layer, ours, heads):
    """The breakdown of one step: metadata, (ours) our plan, and each layer."""
    parts = {"meta": profile_part(init)}
    init()
    if ours is not None and ours._dsv4_step.plan is not None:
        parts["plan"] = profile_part(lambda: _rebuild_plan(ours, heads))
    for i, ratio in enumerate(RATIOS):
        parts[f"c{ratio}"] = profile_part(lambda: layer(i))
    return parts


def save_traces(dep, factories, heads, prefix, ext, out_dir):
    """One step of each backend as a Chrome trace, and dsv4-kernel-diff's comparison (SGLang = A, ours = B)."""
    import torch.profiler as tp
    from sglang.srt.environ import envs
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    from sglang_dsv4_sparse.tools import kernel_diff

    paths = {}
    for name in ("sglang", "ours"):
        fb, bases, _ = dep.batch("EXTEND", prefix, ext)
        gen = torch.Generator(device=dep.device).manual_seed(1)
        raw, ids = dep.c4_picks(prefix, ext, bases, gen)
        q, sink = _query(sum(ext), heads, gen, dep.device)
        backend = at_rank_heads(factories[name](dep.runner), heads)
        layers = [dep.layer(i, heads) for i in range(len(RATIOS))]
        with torch.no_grad(), forward_context(ForwardContext(attn_backend=backend)), \
                envs.SGLANG_OPT_FLASHMLA_SPARSE_PREFILL.override(True):
            def step():
                backend.init_forward_metadata(fb)
                _write_c4(backend, raw, ids)
                for i in range(len(RATIOS)):
                    backend.forward(q=q, k=q, v=q, layer=layers[i], forward_batch=fb, compress_ratio=RATIOS[i],
                                    save_kv_cache=False, attn_sink=sink)

            step()
            _sync(dep.device)
            with tp.profile(activities=[tp.ProfilerActivity.CPU, tp.ProfilerActivity.CUDA]) as prof:
                step()
                _sync(dep.device)
        paths[name] = os.path.join(out_dir, f"trace_{name}_h{heads}.json")
        prof.export_chrome_trace(paths[name])
        del backend
    print(f"== dsv4-kernel-diff, one step at {heads} heads, {ext[0]}-token chunk after {prefix[0]} (A = SGLang, B = ours)",
          flush=True)
    kernel_diff.main([paths["sglang"], paths["ours"]])
    return paths


def bench_decode_graph(dep, factory, name, heads, bs, ctx, reps):
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    from sglang_dsv4_sparse.benchmarking import events_ms

    dev = dep.device
    gen = torch.Generator(device=dev).manual_seed(2)
    prefix, ext = [ctx - 1] * bs, [1] * bs
    fb, bases, _ = dep.batch("DECODE", prefix, ext)
    raw, ids = dep.c4_picks(prefix, ext, bases, gen)
    q, sink = _query(bs, heads, gen, dev)
    backend = at_rank_heads(factory(dep.runner), heads)
    layers = [dep.layer(i, heads) for i in range(len(RATIOS))]
    row = {}
    with torch.no_grad(), forward_context(ForwardContext(attn_backend=backend)):
        backend.init_cuda_graph_state(max_bs=bs, max_num_tokens=bs)
        backend.init_forward_metadata_out_graph(fb, in_capture=True)

        def body():
            backend.init_forward_metadata_in_graph(fb)
            # Stands for the C4 indexer: the same copy for both backends.
            backend.forward_metadata.core_attn_metadata.c4_sparse_page_indices[:bs, :TOPK].copy_(ids)
            return [
                backend.forward(q=q, k=q, v=q, layer=layers[i], forward_batch=fb, compress_ratio=RATIOS[i],
                                save_kv_cache=False, attn_sink=sink)
                for i in range(len(RATIOS))
            ]

        if dev != "cuda":
            row["step"] = events_ms(body, reps)
            return row
        graph, _ = capture_graph(body)
        if name == "ours_static" and backend._dsv4_step is None:
            raise RuntimeError("our backend left the decode step to SGLang")
        backend.init_forward_metadata_out_graph(fb)
        row["step"] = events_ms(graph.replay, max(reps, 20))
        row["meta_out_graph"] = _wall_ms(lambda: backend.init_forward_metadata_out_graph(fb), dev, reps)
    del graph, backend
    return row


def capture_graph(body):
    """``(graph, what the captured call returned)``: ``body`` run twice on a side stream (the warm-up torch's
    capture wants: lazy allocations and autotuning happen outside the graph), then captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = body()
    return graph, outs


def _default_out_dir() -> str:
    out = os.environ.get("OUT") or os.path.join(ROOT, "gpu_check_out")
    os.makedirs(out, exist_ok=True)
    return out


# Rows the breakdown profiles at each head count: (chunk, prefix, requests).
BREAKDOWN_ROWS = ((8192, 0, 1), (8192, 120_000, 1), (32768, 1_000_000, 1))
# The one BENCHMARKS.md shows (the JSON keeps them all): (chunk, prefix).
MARKDOWN_BREAKDOWN_ROW = (8192, 120_000)


def pick_device(prog: str, tiny: bool):
    """``"cuda"``, or ``"cpu"`` for a ``--tiny`` plumbing check (Triton's interpreter, SGLang's CUDA-only
    planners stubbed), or the no-GPU exit status to return. Installs the test stand-ins first."""
    print("stand-ins:", stand_ins.install() or "none needed", flush=True)
    if torch.cuda.is_available():
        return "cuda"
    if not tiny:
        from sglang_dsv4_sparse.benchmarking import no_gpu

        return no_gpu(prog, " (or --tiny for a CPU plumbing check)")
    os.environ.setdefault("TRITON_INTERPRET", "1")
    import sglang.srt.layers.attention.deepseek_v4_backend as parent

    # FlashMLA's scheduler metadata and the compressors' JIT planner are CUDA-only.
    parent._create_flashmla_metadata = lambda: None
    parent.create_paged_compressor_data = lambda **_: None
    return "cpu"


def main() -> int:
    args = parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        print_tables(saved["header"], saved["rows"], markdown=args.markdown)
        if any("breakdown" in r for r in saved["rows"]):
            print()
            print_breakdown(saved["rows"], markdown=args.markdown)
        return 0
    device = pick_device("bench_sglang_ab.py", args.tiny)
    if isinstance(device, int):
        return device
    extends, decodes, heads_list = plan_rows(args)
    batches = [extend_batch(c, p, n, args.tiny) for c, p, n in extends]
    max_reqs = max([len(pre) for pre, _, _ in batches] + [b for b, _ in decodes])
    max_context = max([max(p + e for p, e in zip(pre, ext)) for pre, ext, _ in batches] + [ctx for _, ctx in decodes])
    full_tokens = max([sum(-(-(p + e) // PAGE) * PAGE for p, e in zip(pre, ext)) for pre, ext, _ in batches]
                      + [b * (-(-ctx // PAGE) * PAGE) for b, ctx in decodes])
    out_dir = _default_out_dir()
    t0 = time.time()
    dep = Deployment(max_reqs=max_reqs, max_context=max_context, full_tokens=full_tokens, device=device)
    print(f"deployment: {full_tokens} full-cache tokens, {max_reqs} requests, built in {time.time() - t0:.0f} s", flush=True)
    factories = _factories()
    variants = () if args.no_variants else tuple(VARIANTS)
    names = ("ours", *variants) if args.tiny else ("sglang", "ours", *variants)
    # Steps at short prefixes are host-bound and their wall time moves by a few percent: a median of 15.
    reps = 2 if args.tiny else 15
    results = []
    total = len(heads_list) * (len(extends) + len(decodes))
    done = 0
    for heads in heads_list:
        for (chunk, prefix, nreq), (pre, ext, mode) in zip(extends, batches):
            done += 1
            row = dict(kind="extend", heads=heads, chunk=chunk or "mixed", prefix=prefix, reqs=len(pre))
            profiled = args.breakdown and device == "cuda" and (chunk, prefix, nreq) in BREAKDOWN_ROWS
            if profiled:
                row["breakdown"] = {}
            for name in _names_for(names, heads, "extend"):
                try:
                    with _variant_env(name):
                        row[name] = bench_extend(dep, factories[name], name, heads, pre, ext, reps, mode=mode,
                                                 breakdown=row["breakdown"] if profiled else None)
                except Exception as exc:
                    traceback.print_exc()
                    row[name] = dict(error=f"{type(exc).__name__}: {exc}"[:300])
                torch.cuda.empty_cache() if device == "cuda" else None
            results.append(row)
            print(f"[{done}/{total}, {time.time() - t0:.0f} s] {_brief(row)}", flush=True)
        for bs, ctx in decodes:
            done += 1
            row = dict(kind="decode", heads=heads, bs=bs, ctx=ctx)
            for name in _names_for(names, heads, "decode"):
                try:
                    with _variant_env(name):
                        row[name] = bench_decode_graph(dep, factories[name], name, heads, bs, ctx, reps)
                except Exception as exc:
                    traceback.print_exc()
                    row[name] = dict(error=f"{type(exc).__name__}: {exc}"[:300])
            results.append(row)
            print(f"[{done}/{total}, {time.time() - t0:.0f} s] {_brief(row)}", flush=True)
    from sglang_dsv4_sparse.benchmarking import run_header

    meta = run_header(ROOT, packages=("sglang",))
    path = args.json or os.path.join(out_dir, "bench_sglang_ab.json")
    with open(path, "w") as f:
        json.dump(dict(header=meta, rows=results), f, indent=1)
    print(f"bench_sglang_ab.py: wrote {path}", flush=True)
    if args.route_table:
        table = route_table(meta, results)
        with open(args.route_table, "w") as f:
            json.dump(table.to_json(), f, indent=1)
        print(f"bench_sglang_ab.py: route table of {len(table.entries)} shapes written to {args.route_table}", flush=True)
    if args.breakdown and device == "cuda":
        heads = min(h for h in heads_list)
        try:
            save_traces(dep, factories, heads, [8192], [8192], out_dir)
        except Exception:
            traceback.print_exc()
    print_tables(meta, results, markdown=args.markdown)
    if args.breakdown:
        print_breakdown(results, markdown=args.markdown)
    return 0


def _brief(row):
    """A progress line: the row's shape and each backend's step (or error)."""
    keys = [k for k in ("heads", "chunk", "prefix", "reqs", "bs", "ctx") if k in row]
    shape = " ".join(f"{k}={row[k]}" for k in keys)
    steps = [f"{n} {row[n]['step']:.3f}" if "step" in row[n] else f"{n} ERR"
             for n in ("sglang", "ours", *VARIANTS) if n in row]
    routes = row.get("ours", {}).get("routes")
    return shape + ": " + ", ".join(steps) + (f" (routes {routes})" if routes else "")


def route_table(header, rows):
    """The route table: per shape below 64 heads, each layer's time on SGLang's route and on ours
    (``ours_static``), and our plan's cost; rows where either failed are left out."""
    from sglang_dsv4_sparse.routing import RouteTable, StepShape, TableEntry

    entries = []
    for r in rows:
        theirs, ours = r.get("sglang", {}), r.get("ours_static", {})
        if r["kind"] != "extend" or "step" not in theirs or "step" not in ours:
            continue
        pre, ext, _ = extend_batch(None if r["chunk"] == "mixed" else r["chunk"], r["prefix"], r["reqs"])
        shape = StepShape(sum(ext), len(ext), max(p + e for p, e in zip(pre, ext)), r["heads"])
        layers = {ratio: {"sglang": theirs[f"c{ratio}"], "ours": ours[f"c{ratio}"]} for ratio in RATIOS}
        entries.append(TableEntry(shape, layers, ours.get("plan", 0.0)))
    return RouteTable(dict(header, source="scripts/bench_sglang_ab.py --route-table"), entries)


def print_breakdown(rows, markdown=False):
    """Host and GPU ms of each part of the profiled steps, SGLang / ours."""
    parts = ("meta", "plan", "c0", "c4", "c128")
    table = [["heads", "chunk", "prefix", "part", "host", "gpu", "gpu dequant", "gpu index", "gpu attention",
              "gpu other"]]
    for r in rows:
        if markdown and (r.get("chunk"), r.get("prefix")) != MARKDOWN_BREAKDOWN_ROW:
            continue
        for part in parts:
            sides = [r.get("breakdown", {}).get(n, {}).get(part) for n in ("sglang", "ours")]
            if not any(sides):
                continue
            cells = [r["heads"], r["chunk"], r["prefix"], part]
            for key in ("host", "gpu", "gpu_dequant", "gpu_index", "gpu_attention", "gpu_other"):
                cells.append(" / ".join("-" if side is None else f"{side.get(key, 0.0):.3f}" for side in sides))
            table.append(cells)
    if len(table) == 1:
        return
    title = "Step breakdown (PyTorch profiler; ms per call, SGLang / ours; host = time to issue the call)"
    print(("" if markdown else "== ") + title + (":\n" if markdown else ""))
    print("\n".join(_render(table, markdown)))


def _fmt(v):
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _failed_both(r):
    return all("error" in r.get(name, {}) for name in ("sglang", "ours"))


_ROUTE_TAGS = {"sglang": "S", "shared": "sh", "native": "nat", "folded": "fold", "index": "idx"}


def _routes(r):
    routes = r.get("ours", {}).get("routes")
    if not routes:
        return "-"
    return "/".join(_ROUTE_TAGS.get(routes.get(str(ratio), "-"), routes.get(str(ratio), "-")) for ratio in RATIOS)


def _tables(rows, skip_failed=False):
    """The extend and the decode table (header row first) of a run's rows; ``skip_failed`` leaves out
    extend rows that failed for both backends."""
    ext_cols = ["meta", "c0", "c4", "c128", "step"]
    # A variant's columns appear where the run measured it.
    variants = sorted({n for r in rows for n in r if n.startswith("ours_")})
    tags = {v: v[len("ours_"):] for v in variants}
    extra = [f"{tags[v]} {c}" for v in variants for c in ("c0", "c4", "c128", "plan", "step", "ratio")]
    extend = [["heads", "chunk", "prefix", "reqs"] + ext_cols + ["ratio", "routes C0/C4/C128"] + extra]
    for r in rows:
        if r["kind"] != "extend" or (skip_failed and _failed_both(r)):
            continue
        cells = [r["heads"], r["chunk"], r["prefix"], r["reqs"]] + [_pair(r, c) for c in ext_cols]
        cells += [_ratio(r, "step"), _routes(r)]
        for v in variants:
            cells += [_one(r, v, c) for c in ("c0", "c4", "c128", "plan", "step")] + [_ratio(r, "step", v)]
        extend.append(cells)
    decode = [["heads", "bs", "ctx", "step", "ratio"] + [f"{tags[v]} {c}" for v in variants for c in ("step", "ratio")]]
    for r in rows:
        if r["kind"] == "decode":
            cells = [r["heads"], r["bs"], r["ctx"], _pair(r, "step"), _ratio(r, "step")]
            for v in variants:
                cells += [_one(r, v, "step"), _ratio(r, "step", v)]
            decode.append(cells)
    return extend, decode


def _compact(rows, name="ours"):
    """BENCHMARKS.md's extend table: one line per (heads, chunk, requests), one cell per prefix:
    ``name / SGLang`` step ratio, SGLang's step in ms and, for ours, its routes (``S`` = SGLang's attention)."""
    prefixes = sorted({r["prefix"] for r in rows if r["kind"] == "extend"})
    table = [["heads", "chunk", "reqs"] + [f"prefix {p}" for p in prefixes]]
    keys = []
    for r in rows:
        key = (r["heads"], r.get("chunk"), r.get("reqs"))
        if r["kind"] == "extend" and key not in keys:
            keys.append(key)
    for heads, chunk, reqs in keys:
        cells = [heads, chunk, reqs]
        for p in prefixes:
            r = next((x for x in rows if x["kind"] == "extend" and (x["heads"], x["chunk"], x["reqs"], x["prefix"])
                      == (heads, chunk, reqs, p)), None)
            if r is None:
                cells.append("")
            elif _failed_both(r):
                cells.append("both fail")
            else:
                theirs = r.get("sglang", {}).get("step")
                note = f"; {_routes(r)}" if name == "ours" else ""
                cells.append(f"{_ratio(r, 'step', name)} ({theirs:.2f} ms{note})" if theirs else _ratio(r, "step", name))
        table.append(cells)
    return table


def print_tables(meta, rows, markdown=False):
    if markdown:
        from sglang_dsv4_sparse.benchmarking import header_line

        decode = _tables(rows)[1]
        lines = [header_line(meta), "", "Extend step, ours / SGLang (SGLang's step; ours' routes C0/C4/C128):", ""]
        lines += _render(_compact(rows), True)
        if any("step" in r.get("ours_static", {}) for r in rows):
            lines += ["", "The same rows with our routes on every layer (`static`), ours / SGLang (SGLang's step):", ""]
            lines += _render(_compact(rows, "ours_static"), True)
        if len(decode) > 1:
            lines += ["", "CUDA-graph decode, one SWA, C4 and C128 layer a replay (ms, SGLang / ours):", ""]
            lines += _render(decode, True)
        print("\n".join(lines + [""] + _findings(rows)))
        return
    extend, decode = _tables(rows)
    header = f"{meta['gpu']}, {meta['date']}, torch {meta['torch']}, Triton {meta['triton']}, SGLang {meta['sglang']}, commit {meta['commit']}"
    lines = [f"== sglang A/B, extend ({header}); ms, SGLang / ours, ratio = ours / SGLang step;"
             " routes: ours per layer kind (S = SGLang's); static = ours with our routes on every layer"]
    lines += _render(extend, markdown)
    lines.append("== sglang A/B, CUDA-graph decode (SWA + C4 + C128 layer per replay); ms, SGLang / ours")
    lines += _render(decode, markdown)
    print("\n".join(lines))


def _findings(rows):
    """The goals' figures as sentences, each computed from the rows (ratios are ours / SGLang steps)."""

    def ratio(r, name="ours"):
        a, b = r.get("sglang", {}).get("step"), r.get(name, {}).get("step")
        return b / a if a and b else None

    ext = [(r, ratio(r)) for r in rows if r["kind"] == "extend" and ratio(r) is not None]
    lines = []
    if ext:
        worst = max(ext, key=lambda x: x[1])
        lines.append(f"- Extend step, ours / SGLang, every row both ran ({len(ext)}): {min(v for _, v in ext):.2f}-"
                     f"{worst[1]:.2f}x (worst: {worst[0]['heads']} heads, chunk {worst[0]['chunk']}, prefix "
                     f"{worst[0]['prefix']}, {worst[0]['reqs']} requests).")
        narrow = sorted(v for r, v in ext if r["heads"] < 64)
        if narrow:
            lines.append(f"- Median over the {len(narrow)} rows at 8 and 16 heads: {statistics.median(narrow):.2f}x.")
        for heads in sorted({r["heads"] for r, _ in ext}):
            vals = [v for r, v in ext if r["heads"] == heads and r["prefix"] == 1_000_000]
            if vals:
                lines.append(f"- 1M-prefix rows at {heads} heads: {min(vals):.2f}-{max(vals):.2f}x.")
        wide = [v for r, v in ext if r["heads"] >= 64]
        if wide:
            lines.append(f"- 64- and 128-head rows: {min(wide):.2f}-{max(wide):.2f}x.")
    dec = [ratio(r) for r in rows if r["kind"] == "decode" and ratio(r) is not None]
    if dec:
        lines.append(f"- CUDA-graph decode step, ours / SGLang: {min(dec):.2f}-{max(dec):.2f}x.")
    dec_static = [ratio(r, "ours_static") for r in rows if r["kind"] == "decode" and ratio(r, "ours_static")]
    if dec_static:
        lines.append(f"- The same with our path on every decode (`static`): {min(dec_static):.2f}-{max(dec_static):.2f}x.")
    failed = [r for r in rows if r["kind"] == "extend" and _failed_both(r)]
    if failed:
        lines.append(f"- {len(failed)} extend rows failed for both backends (SGLang's own metadata).")
    return lines


def _one(r, name, key):
    v = r.get(name, {})
    if "error" in v:
        return "ERR"
    return f"{v[key]:.3f}" if key in v else "-"


def _pair(r, key):
    return f"{_one(r, 'sglang', key)} / {_one(r, 'ours', key)}"


def _ratio(r, key, ours="ours"):
    a, b = r.get("sglang", {}).get(key), r.get(ours, {}).get(key)
    return f"{b / a:.2f}" if a and b else "-"


def _render(table, markdown):
    if markdown:
        out = ["| " + " | ".join(map(str, table[0])) + " |", "|" + " --- |" * len(table[0])]
        out += ["| " + " | ".join(map(str, row)) + " |" for row in table[1:]]
        return out
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    return ["  ".join(str(c).rjust(w) for c, w in zip(row, widths)) for row in table]


if __name__ == "__main__":
    sys.exit(main())
