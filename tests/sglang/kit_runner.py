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

:func:`run_spec_case` runs the kit's speculative steps the same way (target
verify, draft extend; see the section below) and records which attention ran
them, ours or SGLang's (``KitResult.ours_ran``).

Used by ``tests/sglang/test_kit_cases.py`` (CPU and CUDA) and
``scripts/sglang_kit_matrix.py`` (the GPU run of both backends).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import unittest
from typing import Callable, Optional

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
    # float, the real heads only; None only for a speculative case whose attention
    # SGLang's backend had to run on a machine where it cannot (see ``note``)
    output: Optional[torch.Tensor]
    expected: torch.Tensor  # the kit's reference, the real heads only
    route: str
    # Speculative cases on our backend: whether our core ran every layer of the step
    # (False: SGLang's attention ran it, or some layer of it); None for SGLang's backend.
    ours_ran: Optional[bool] = None
    note: str = ""


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

    def __init__(self, case, *, real_heads: int, sparse_prefill: bool, device: str, testcase=None,
                 swa_size: Optional[int] = None):
        self.kit = kit()
        self.case = case
        self.real_heads = real_heads
        self.sparse_prefill = sparse_prefill
        self.testcase = testcase or unittest.TestCase()
        ratio = case.compress_ratio
        # The kit's module builds the registry's "dsv4" backend; run() swaps in the one under test.
        sizes = {} if swa_size is None else {"swa_size": swa_size}
        self.fx = self.kit.build_dsv4_attention_fixture(
            self.testcase, case, device=device, compression_ratios=[ratio], **sizes
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


# ---------------------------------------------------------------------------
# Speculative decoding: TARGET_VERIFY and DRAFT_EXTEND (DSV4_SPEC.md section 4b)
# ---------------------------------------------------------------------------
#
# :func:`run_spec_case` follows the kit's ``run_dsv4_target_verify_attention_case``
# and ``run_dsv4_draft_extend_attention_case`` step by step, with the same three
# differences as :func:`run_case`, and two more:
#
# * the kit takes the speculative inputs from its ``runner_modes`` modules,
#   which import SGLang's model runner and scheduler (uvicorn, fastapi,
#   setproctitle: packages an SGLang installed without its dependencies lacks).
#   The inputs are two small dataclasses of ``sglang.srt.speculative.eagle_info``,
#   so they are built here, from the case, as EAGLE hands them to the target and
#   the draft model (``test_spec_inputs_match_kit`` compares them with the
#   kit's where those modules import);
# * the SWA pool is sized for the case: the kit's default 1024 locations do not
#   hold three requests of 300 tokens in its layout (:func:`spec_swa_size`).
#
# A case's draft count is its per-request input length, as in the kit (its mock
# runner derives ``speculative_num_draft_tokens`` from it).
#
# Our backend may hand a speculative step, or a layer of it, to SGLang's
# attention (``sglang_gating.step_fallback_reason``, ``layer_fallback_reason``).
# The runner records which attention ran (``KitResult.ours_ran``,
# ``KitResult.route``) instead of failing on it.

# Our backend runs verify and draft extend itself (under the kit's ``ours`` route: the verify
# kernel below 64 heads, the paged route above): the tests and the GPU matrix fail a speculative
# case whose attention SGLang ran.
EXPECT_OURS_FOR_SPEC = True

# Layer kinds each mode meets: verify every kind; draft extend is window-only
# (SGLang builds its metadata with need_compress=False, so C4/C128 have none).
SPEC_RATIOS = {"verify": (0, 4, 128), "draft_ext": (0,)}
# Draft tokens per request the GPU matrix runs (EAGLE/MTP's usual 1-3 steps, plus the bonus token).
DRAFT_COUNTS = (2, 3, 4)
# Committed prefixes per request. "three": one shorter than the 128-row window
# (40), one whose draft tokens start on a 256-token page's last row and run onto
# the next page (255), one whose window spans a page boundary (300).
SPEC_PREFIXES = {"one": (160,), "three": (40, 255, 300)}
# The kit's CUDA-graph verify runner captures two requests: its cases have at most two.
SPEC_GRAPH_PREFIXES = {"one": (160,), "two": (40, 255)}


def spec_forward_mode(kind: str):
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    return {"verify": ForwardMode.TARGET_VERIFY, "draft_ext": ForwardMode.DRAFT_EXTEND_V2}[kind]


def spec_case(kind: str, *, ratio: int, real_heads: int, drafts: int, prefix_lens):
    """A kit case of ``kind`` (``"verify"`` or ``"draft_ext"``) at the kernel width of ``real_heads``.

    Every request has ``drafts`` query rows after ``prefix_lens[r]`` committed
    tokens: the draft tokens of a verify, the accepted tokens of a draft extend.
    """
    if ratio not in SPEC_RATIOS[kind]:
        raise ValueError(f"{kind} has no compress ratio {ratio} (it takes {SPEC_RATIOS[kind]})")
    k = kit()
    prefix_lens = tuple(prefix_lens)
    return k.DSV4AttentionCase(
        name=f"dsv4_{kind}_c{ratio}_d{drafts}_p{'_'.join(map(str, prefix_lens))}",
        backend="dsv4",
        forward_mode=spec_forward_mode(kind),
        num_heads=kernel_heads(real_heads),
        page_size=k.DSV4_PAGE_SIZE,
        prefix_lens=prefix_lens,
        extend_lens=(drafts,) * len(prefix_lens),
        compress_ratio=ratio,
    )


def spec_max_context_len(case) -> int:
    """The ``req_to_token`` width the kit's fixture gives ``case``: 256, or its longest sequence in whole pages."""
    page = case.page_size
    return max(256, -(-max(case.seq_lens) // page) * page)


def spec_swa_size(case, num_reqs: Optional[int] = None) -> int:
    """SWA locations the kit's layout needs (its default 1024, or more).

    The kit puts request ``r``'s position ``p`` at ``1 + r * max_context_len + p``
    and maps full-cache ids to SWA ids one to one over ``swa_size``: three
    requests of 300 tokens reach past the default.
    """
    reqs = case.batch_size if num_reqs is None else num_reqs
    needed = 1 + reqs * spec_max_context_len(case)
    return max(1024, -(-needed // case.page_size) * case.page_size)


def chain_verify_input(case, batch, device):
    """The ``EagleVerifyInput`` of a chain (top-k 1) of ``case``'s draft count per request.

    DSv4's attention reads the draft count and the drafts' tokens and positions;
    chain causality comes from each draft token's own window ids, not from the
    mask, which is here so that the input is the one EAGLE builds.
    """
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
    from sglang.srt.speculative.eagle_info import EagleVerifyInput

    drafts = uniform_drafts(case)
    reqs = case.batch_size
    masks = []
    for prefix in case.prefix_lens:
        # Draft i sees the committed prefix and drafts 0..i.
        seen = torch.ones(drafts, prefix + drafts, dtype=torch.bool)
        seen[:, prefix:] = torch.ones(drafts, drafts, dtype=torch.bool).tril()
        masks.append(seen.flatten())
    token_ids = torch.arange(reqs * drafts, dtype=torch.long, device=device).view(reqs, drafts)
    # In a chain each draft's successor is the next draft; the last has none.
    successor = torch.arange(1, drafts + 1, dtype=torch.long, device=device)
    next_token = successor.masked_fill(successor == drafts, -1).repeat(reqs, 1)
    return EagleVerifyInput(
        draft_token=batch.input_ids,
        custom_mask=torch.cat(masks).to(device),
        positions=batch.positions,
        retrieve_index=token_ids,
        retrieve_next_token=next_token,
        retrieve_next_sibling=torch.full_like(token_ids, -1),
        retrieve_cum_len=torch.arange(reqs + 1, dtype=torch.int32, device=device) * drafts,
        spec_steps=drafts - 1,
        topk=1,
        draft_token_num=drafts,
        capture_hidden_mode=CaptureHiddenMode.FULL,
        seq_lens_sum=batch.seq_lens_sum,
        seq_lens_cpu=batch.seq_lens_cpu,
    )


def uniform_drafts(case) -> int:
    """The case's draft count: SGLang's DSv4 backend takes one count for the whole batch."""
    counts = set(case.input_lens)
    if len(counts) != 1:
        raise ValueError(f"{case.name}: one draft count per batch, got {case.input_lens}")
    return counts.pop()


def prepare_verify_batch(case, batch, device) -> None:
    """Make the kit's batch a verify step: ``seq_lens`` are the committed prefixes (the backend adds the drafts)."""
    batch.seq_lens = torch.tensor(case.prefix_lens, dtype=torch.int32, device=device)
    batch.seq_lens_cpu = torch.tensor(case.prefix_lens, dtype=torch.int32)
    batch.seq_lens_sum = sum(case.prefix_lens)
    batch.spec_info = chain_verify_input(case, batch, device)


def prepare_draft_extend_batch(case, batch, device) -> None:
    """Make the kit's batch a draft extend after a verify that accepted ``case``'s input length per request.

    ``seq_lens`` already count the accepted tokens (the kit's batch has them so).
    """
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
    from sglang.srt.speculative.eagle_info import EagleDraftExtendInput

    accepted = torch.tensor(case.input_lens, dtype=torch.int32, device=device)
    batch.spec_info = EagleDraftExtendInput(
        hidden_states=None,
        num_correct_drafts=accepted - 1,
        num_accept_tokens=accepted,
        num_accept_tokens_cpu=list(case.input_lens),
        input_ids=batch.input_ids,
        seq_lens=batch.seq_lens,
        seq_lens_cpu=batch.seq_lens_cpu,
        req_pool_indices=batch.req_pool_indices,
        positions=batch.positions,
        capture_hidden_mode=CaptureHiddenMode.LAST,
        num_tokens_per_req=max(case.input_lens),
        num_tokens_for_logprob_per_req=1,
    )


def sglang_attention_runs(device) -> bool:
    """Whether SGLang's own DSv4 attention can run on ``device``: FlashMLA, so a CUDA GPU it supports."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    from sglang_dsv4_sparse.dispatch import flashmla_status

    return flashmla_status(device.index or 0)[0]


class SGLangAttentionUnavailable(Exception):
    """SGLang's attention was asked to run a layer where it cannot (no FlashMLA here)."""


@contextlib.contextmanager
def watch_sglang_attention(layers: list, *, can_run: bool):
    """Append to ``layers`` each layer SGLang's own attention runs, while in the block.

    Our backend hands a step or a layer to SGLang through the parent class's
    ``_forward_attention``; SGLang's backend always runs it. Where it cannot run
    (``can_run`` False) the call raises :class:`SGLangAttentionUnavailable`
    instead of failing somewhere inside SGLang.
    """
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    original = DeepseekV4AttnBackend.__dict__["_forward_attention"]

    def watched(self, q, k, v, layer, *args, **kwargs):
        layers.append(layer.layer_id)
        if not can_run:
            raise SGLangAttentionUnavailable(type(self).__name__)
        return original(self, q, k, v, layer, *args, **kwargs)

    DeepseekV4AttnBackend._forward_attention = watched
    try:
        yield layers
    finally:
        DeepseekV4AttnBackend._forward_attention = original


class _SpecFixture(_Fixture):
    """One kit fixture of a verify or draft-extend case, run by several backends in turn."""

    def __init__(self, case, *, real_heads: int, device: str, testcase=None):
        # No sparse prefill: C4 layers get the kit's decode-style seeding (32 rows each),
        # as in run_dsv4_target_verify_attention_case.
        super().__init__(case, real_heads=real_heads, sparse_prefill=False, device=device, testcase=testcase,
                         swa_size=spec_swa_size(case))
        self.device = device
        batch = self.fx.forward_batch
        if case.forward_mode.is_target_verify():
            prepare_verify_batch(case, batch, device)
        else:
            prepare_draft_extend_batch(case, batch, device)

    def run(self, backend_name: str) -> KitResult:
        from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

        k = self.kit
        fx = self.fx
        case = self.case
        backend = BACKENDS[backend_name](fx.runner)
        fx.backend = backend
        module = fx.actual_module
        sglang_layers: list = []
        # SGLANG_OPT_FLASHMLA_SPARSE_PREFILL is left as it is: SGLang reads it for
        # extends without speculation only, and the kit's speculative cases leave it too.
        with (
            torch.no_grad(),
            forward_context(ForwardContext(attn_backend=backend)),
            watch_sglang_attention(sglang_layers, can_run=sglang_attention_runs(self.device)),
        ):
            backend.init_forward_metadata(fx.forward_batch)
            # Read now: the reference below builds the metadata again.
            step = getattr(backend, "_dsv4_step", None)
            if case.compress_ratio:
                k._seed_c4_if_needed(fx, num_entries=fx.extra_entries)
            try:
                out = backend.forward(
                    q=self.q, k=self.q, v=self.q, layer=module.attn, forward_batch=fx.forward_batch,
                    compress_ratio=case.compress_ratio, save_kv_cache=False, attn_sink=module.attn_sink,
                )
            except SGLangAttentionUnavailable:
                out = None
            expected = k._pure_torch_dsv4_combined_reference(fx, self.q)
        heads = self.real_heads
        if backend_name == "sglang":
            route, ours_ran, who = "sglang", None, "SGLang's backend"
        else:
            route = our_route(step)
            ours_ran = step is not None and not sglang_layers
            who = "our backend handed the step to it" if step is None else "our backend handed a layer to it"
        note = ""
        if out is None:
            note = f"{case.name}: SGLang's attention ran ({who}); it needs FlashMLA on a CUDA GPU, so no output here"
        elif ours_ran is False:
            note = f"{case.name}: SGLang's attention ran ({who})"
        return KitResult(None if out is None else out[:, :heads].float(), expected[:, :heads].float(), route,
                         ours_ran, note)


def our_route(step) -> str:
    """Our plan's route for the step: ``"verify"`` where it groups each request's draft tokens for the
    verify kernel (``StepState.verify``), else its ``route``; ``"sglang"`` where it handed the step over."""
    if step is None:
        return "sglang"
    return "verify" if getattr(step, "verify", None) is not None else step.route


def run_spec_case(kind: str, *, ratio: int, real_heads: int, drafts: int, prefix_lens, backends=("ours",),
                  device: str = "cuda", testcase=None) -> dict:
    """Run one verify (``kind="verify"``) or draft-extend (``"draft_ext"``) case on each backend: ``{name: KitResult}``.

    ``KitResult.ours_ran`` says whether our core ran the attention (``route``:
    our plan's route, see :func:`our_route`).
    """
    case = spec_case(kind, ratio=ratio, real_heads=real_heads, drafts=drafts, prefix_lens=prefix_lens)
    fixture = _SpecFixture(case, real_heads=real_heads, device=device, testcase=testcase)
    return {name: fixture.run(name) for name in backends}


def spec_row(kind: str, *, ratio: int, real_heads: int, drafts: int, prefix_lens, backends=("ours", "sglang"),
             device: str = "cuda", testcase=None, expect_ours: Optional[bool] = None) -> dict:
    """One speculative case as the GPU matrix records it (``scripts/sglang_kit_matrix.py``).

    ``status``: ``pass`` (every backend's output within the kit's tolerance of
    the reference and of each other, and, with ``expect_ours`` (default
    :data:`EXPECT_OURS_FOR_SPEC`), our core ran it), ``skip`` (no output: SGLang's
    attention had to run where it cannot), ``FAIL``.
    """
    expect_ours = EXPECT_OURS_FOR_SPEC if expect_ours is None else expect_ours
    case = spec_case(kind, ratio=ratio, real_heads=real_heads, drafts=drafts, prefix_lens=prefix_lens)
    row = dict(case=case.name, ratio=ratio, heads=real_heads, route=kind, drafts=drafts,
               prefix_lens=list(case.prefix_lens))
    results = run_spec_case(kind, ratio=ratio, real_heads=real_heads, drafts=drafts, prefix_lens=prefix_lens,
                            backends=backends, device=device, testcase=testcase)
    ours = results.get("ours")
    if ours is not None:
        row.update(ours_route=ours.route, ours_ran=ours.ours_ran)
    if all(r.output is not None for r in results.values()):
        row.update({f"{name}_vs_ref": worst_error(r.output, r.expected) for name, r in results.items()})
        if ours is not None and "sglang" in results:
            row["ours_vs_sglang"] = worst_error(ours.output, results["sglang"].output)
        worst = max(v for key, v in row.items() if key.endswith(("_vs_ref", "_vs_sglang")))
        row["status"] = "pass" if worst <= 1.0 else "FAIL"
    else:
        row.update(status="skip", why="; ".join(r.note for r in results.values() if r.output is None))
    if expect_ours and ours is not None and not ours.ours_ran:
        row.update(status="FAIL", why=f"expected our attention to run: {ours.note}")
    return row
