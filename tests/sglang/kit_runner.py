"""SGLang's own DSv4 attention test kit, run against either backend (test-only helper).

SGLang 0.5.23 ships ``sglang.test.kits.attention_unittest.attention_methods.
dsv4_attention``: a mock model runner with a real DSv4 pool, thirteen
``make_dsv4_cases`` batches (window-only extends and decodes around the window
and page boundaries), C4 seeding helpers for the dense (paged) and the
sparse-prefill extend paths, and pure-torch references that read bf16 keys,
not the fp8 cache. :func:`run_case` follows the kit's own
``run_dsv4_compress_attention_case`` step by step, with three differences:

* the backend is chosen (this package's or SGLang's ``DeepseekV4AttnBackend``)
  and every case can run as a window-only, C4 or C128 layer;
* a tensor-parallel rank's head count: the fixture is built at the kernel
  width SGLang hands the backend (64, or 128 for 128 heads), the query's heads
  past the rank's real ones are zero and so is their sink, as the DSv4 model
  pads them; ``layer.tp_q_head_num`` is the real count. Only the real heads
  are compared;
* the kit asserts SGLang's internal route (``sparse_prefill_cache``); here
  that is checked for SGLang's backend only, and for ours the route its plan
  took (so a step that silently fell back to SGLang fails).

Used by ``tests/sglang/test_kit_cases.py`` (CPU and CUDA) and
``scripts/sglang_kit_matrix.py`` (the GPU run of both backends).
"""

from __future__ import annotations

import dataclasses
import os
import unittest
from typing import Callable

import torch

from sglang_dsv4_sparse import layout as L

KIT_MODULE = "sglang.test.kits.attention_unittest.attention_methods.dsv4_attention"
RATIOS = (0, 4, 128)


def kit():
    import importlib

    return importlib.import_module(KIT_MODULE)


def cpu_compat() -> Callable[[], None]:
    """Let the kit run on a CPU-only machine (Triton's interpreter); returns a function that undoes it.

    * The kit writes keys through ``quant_to_nope_fp8_rope_bf16_pack_triton``,
      whose fp8 conversion is wrong in Triton's CPU interpreter (a key of -0.99
      comes back as -0.5) while its reference reads the bf16 keys: every case
      would fail for a reason that is neither backend's. The stand-in quantizes
      with the production recipe (``layout.quantize_rows``) into the same pack.
    * Its compressed-cache writer saves and restores the CUDA RNG state, which
      a CPU-only torch cannot read: without CUDA there is no such state, so
      saving and restoring it is a no-op.
    """
    undo = []
    if os.environ.get("TRITON_INTERPRET") == "1":
        from sglang.kernels.ops.kvcache.dsv4_main_kv_store import NopeFp8RopeBf16Pack

        module = kit()
        original = module.quant_to_nope_fp8_rope_bf16_pack_triton

        def pack(k_bf16: torch.Tensor):
            nope, rope, scales = L.quantize_rows(k_bf16)
            return NopeFp8RopeBf16Pack(k_nope_fp8=nope, k_rope_bf16=rope.contiguous(), scale_k_nope_ue8m0=scales)

        module.quant_to_nope_fp8_rope_bf16_pack_triton = pack
        undo.append(lambda: setattr(module, "quant_to_nope_fp8_rope_bf16_pack_triton", original))
    if not torch.cuda.is_available():
        saved = (torch.cuda.get_rng_state, torch.cuda.set_rng_state)
        torch.cuda.get_rng_state = lambda device=None: torch.empty(0, dtype=torch.uint8)
        torch.cuda.set_rng_state = lambda state, device=None: None
        undo.append(lambda: (setattr(torch.cuda, "get_rng_state", saved[0]), setattr(torch.cuda, "set_rng_state", saved[1])))

    def undo_all():
        for step in reversed(undo):
            step()

    return undo_all


def kernel_heads(real_heads: int) -> int:
    """The query width the DSv4 model hands the backend: 64 up to 64 heads, else the real count."""
    return 64 if real_heads <= 64 else real_heads


def all_cases():
    """Every ``make_dsv4_cases`` case (the kit builds them at 64 heads, window-only)."""
    return kit().make_dsv4_cases("dsv4")


def variant(case, *, ratio: int, real_heads: int):
    """``case`` as a layer of ``ratio`` at the kernel width of ``real_heads``."""
    return dataclasses.replace(
        case, name=f"{case.name}_c{ratio}", compress_ratio=ratio, num_heads=kernel_heads(real_heads)
    )


def sparse_prefill_choices(case) -> tuple:
    """Extends run with ``SGLANG_OPT_FLASHMLA_SPARSE_PREFILL`` on and off; decodes once."""
    return (False,) if case.forward_mode.is_decode() else (True, False)


def extra_entries(case, ratio: int, sparse_prefill: bool) -> int:
    """Compressed rows to populate: the kit's 32, or every row a sparse-prefill C4 query reads."""
    if ratio == 4 and sparse_prefill:
        return max(32, max(case.seq_lens) // ratio)
    return 32


def kit_cannot_seed(case, ratio: int, sparse_prefill: bool):
    """Why the kit's own helpers cannot set this combination up (for either backend), or None.

    Its sparse-prefill C4 seeding maps request-local rows to cache ids within
    the first C4 page, so it covers queries that read at most one page (64 rows).
    """
    if ratio == 4 and sparse_prefill:
        rows = max(case.seq_lens) // ratio
        if rows > L.C4_PAGE_SIZE:
            return f"the kit's sparse-prefill C4 seeding covers one C4 page ({L.C4_PAGE_SIZE} rows); this case reads {rows}"
    return None


def forward_batch(runner, mode: str, req_pool_indices, prefix, ext, out_cache_loc, device):
    """A real ``ForwardBatch``, built as the kit builds one, bound to ``runner``'s own KV plan.

    ``mode``: ``"EXTEND"``, ``"MIXED"`` or ``"DECODE"`` (one query a request);
    request ``r`` has ``prefix[r]`` cached tokens and ``ext[r]`` query rows, whose
    full-cache ids are ``out_cache_loc`` in order.
    """
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode

    forward_mode = getattr(ForwardMode, mode)
    seq = [p + e for p, e in zip(prefix, ext)]
    positions = [p + i for p, e in zip(prefix, ext) for i in range(e)]
    fb = ForwardBatch(
        forward_mode=forward_mode,
        batch_size=len(seq),
        input_ids=torch.zeros(len(positions), dtype=torch.int64, device=device),
        req_pool_indices=torch.as_tensor(req_pool_indices, dtype=torch.int32).to(device),
        seq_lens=torch.tensor(seq, dtype=torch.int32, device=device),
        seq_lens_cpu=torch.tensor(seq, dtype=torch.int32),
        out_cache_loc=torch.as_tensor(out_cache_loc, dtype=torch.int64).to(device),
        seq_lens_sum=sum(seq),
        positions=torch.tensor(positions, dtype=torch.int64, device=device),
    )
    runner.kv_index_translator.bind_own_plan(fb)
    if forward_mode != ForwardMode.DECODE:
        fb.extend_prefix_lens = torch.tensor(prefix, dtype=torch.int32, device=device)
        fb.extend_prefix_lens_cpu = list(prefix)
        fb.extend_seq_lens = torch.tensor(ext, dtype=torch.int32, device=device)
        fb.extend_seq_lens_cpu = list(ext)
        fb.extend_start_loc = torch.tensor([sum(ext[:i]) for i in range(len(ext))], dtype=torch.int32, device=device)
        fb.extend_num_tokens = sum(ext)
    return fb


@dataclasses.dataclass
class KitResult:
    output: torch.Tensor  # float, the real heads only
    expected: torch.Tensor  # the kit's reference, the real heads only
    route: str


def ours_factory(runner, route: str = "ours"):
    """Our backend with ``SGLANG_DSV4_SPARSE_PREFILL_ROUTE=route`` (read once, when it is built).

    The kit checks our kernels: ``ours`` runs our routes on every layer, where
    ``auto`` would hand some shapes to SGLang's attention.
    """
    import os

    from sglang_dsv4_sparse.sglang_backend import backend_class

    saved = os.environ.get("SGLANG_DSV4_SPARSE_PREFILL_ROUTE")
    os.environ["SGLANG_DSV4_SPARSE_PREFILL_ROUTE"] = route
    try:
        return backend_class()(runner)
    finally:
        if saved is None:
            os.environ.pop("SGLANG_DSV4_SPARSE_PREFILL_ROUTE")
        else:
            os.environ["SGLANG_DSV4_SPARSE_PREFILL_ROUTE"] = saved


def sglang_factory(runner):
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    return DeepseekV4AttnBackend(runner)


BACKENDS = {"ours": ours_factory, "sglang": sglang_factory}


class _Fixture:
    """One kit fixture (runner, pool, caches, query) that several backends run in turn."""

    def __init__(self, case, *, real_heads: int, sparse_prefill: bool, device: str, testcase=None):
        self.kit = kit()
        self.case = case
        self.real_heads = real_heads
        self.sparse_prefill = sparse_prefill
        self.testcase = testcase or unittest.TestCase()
        ratio = case.compress_ratio
        # The kit's module builds the registry's "dsv4" backend; run() swaps in the one under test.
        self.fx = self.kit.build_dsv4_attention_fixture(
            self.testcase, case, device=device, compression_ratios=[ratio]
        )
        module = self.fx.actual_module
        width = case.num_heads
        if real_heads < width:
            # What the DSv4 model does on a tensor-parallel rank: zero query heads
            # and zero sinks past the real ones; the layer knows its real count.
            module.q_proj.weight.data[real_heads * L.HEAD_DIM :] = 0
            module.attn_sink.data[real_heads:] = 0
            module.attn.tp_q_head_num = real_heads
        max_context_len = self.fx.runner.req_to_token_pool.req_to_token.shape[1]
        self.swa_locs = self.kit._populate_swa_kv_cache(self.fx, max_context_len=max_context_len, device=device)
        if ratio:
            entries = extra_entries(case, ratio, sparse_prefill)
            self.fx.seed_c4_for_sparse_prefill = sparse_prefill
            self.fx.extra_entries = entries
            self.kit._populate_extra_kv_cache(self.fx, layer_id=0, num_entries=entries)
        self.q, _ = module.project(self.fx.input_hidden)

    def run(self, backend_name: str) -> KitResult:
        from sglang.srt.environ import envs
        from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

        k = self.kit
        fx = self.fx
        case = self.case
        backend = BACKENDS[backend_name](fx.runner)
        fx.backend = backend
        module = fx.actual_module
        with (
            torch.no_grad(),
            forward_context(ForwardContext(attn_backend=backend)),
            envs.SGLANG_OPT_FLASHMLA_SPARSE_PREFILL.override(self.sparse_prefill),
        ):
            backend.init_forward_metadata(fx.forward_batch)
            if case.compress_ratio:
                k._seed_c4_if_needed(fx, num_entries=fx.extra_entries)
            out = backend.forward(
                q=self.q, k=self.q, v=self.q, layer=module.attn, forward_batch=fx.forward_batch,
                compress_ratio=case.compress_ratio, save_kv_cache=False, attn_sink=module.attn_sink,
            )
            route = self._route(backend_name, backend)
            if case.compress_ratio:
                expected = k._pure_torch_dsv4_combined_reference(fx, self.q)
            else:
                expected = k._pure_torch_dsv4_swa_reference(fx, self.q, self.swa_locs, case=case)
        heads = self.real_heads
        return KitResult(out[:, :heads].float(), expected[:, :heads].float(), route)

    def _route(self, backend_name: str, backend) -> str:
        extend = not self.case.forward_mode.is_decode()
        if backend_name == "sglang":
            took_sparse = backend.forward_metadata.sparse_prefill_cache is not None
            want_sparse = extend and self.sparse_prefill
            if took_sparse != want_sparse:
                raise AssertionError(f"{self.case.name}: SGLang took sparse prefill={took_sparse}, expected {want_sparse}")
            return "sparse_prefill" if took_sparse else "paged"
        step = getattr(backend, "_dsv4_step", None)
        if step is None:
            raise AssertionError(f"{self.case.name}: our backend left the step to SGLang")
        want = "sparse_prefill" if extend and self.sparse_prefill else "paged"
        if step.route != want:
            raise AssertionError(f"{self.case.name}: our plan took route {step.route}, expected {want}")
        return step.route


def run_case(case, *, ratio: int, real_heads: int, sparse_prefill: bool, backends=("ours",),
             device: str = "cuda", testcase=None) -> dict:
    """Run one kit case as a ``ratio`` layer at ``real_heads`` on each backend: ``{name: KitResult}``."""
    fixture = _Fixture(
        variant(case, ratio=ratio, real_heads=real_heads), real_heads=real_heads,
        sparse_prefill=sparse_prefill, device=device, testcase=testcase,
    )
    return {name: fixture.run(name) for name in backends}


def assert_kit_close(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """The kit's own tolerance (``DSV4_ATOL`` / ``DSV4_RTOL``)."""
    k = kit()
    torch.testing.assert_close(actual, expected, atol=k.DSV4_ATOL, rtol=k.DSV4_RTOL, msg=lambda m: f"{what}: {m}")


def worst_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest ``|a - e| - rtol * |e|`` over ``atol``: at most 1 where the kit's check passes."""
    k = kit()
    excess = (actual - expected).abs() - k.DSV4_RTOL * expected.abs()
    return float(excess.max() / k.DSV4_ATOL) if excess.numel() else 0.0
