"""SGLang's own DSv4 attention test kit on this package's backend (``kit_runner.py`` says how).

Every ``make_dsv4_cases`` case as a window-only, C4 and C128 layer, extends
with sparse prefill on and off, at a tensor-parallel rank's 16 heads (query
zero-padded to 64, as the model hands it over) and at 64 heads, against the
kit's reference and with the kit's tolerance. On CPU the kernels run in
Triton's interpreter; on a GPU with FlashMLA, SGLang's backend runs the same
inputs too and both must agree. (``scripts/sglang_kit_matrix.py`` runs the
whole matrix on a GPU, 8 to 128 heads, with a summary table.)

The speculative steps too (``test_kit_spec_case``): target verify as a
window-only, C4 and C128 layer and draft extend (window-only), with 2 and 4
draft tokens at 8 and 64 heads, a representative subset that keeps CI fast
(the GPU matrix runs 2-4 draft tokens at 8-128 heads over more prefixes). Until
our backend runs these modes itself it hands them to SGLang's attention, which
has no CPU kernels: such a case is skipped on the CPU, and fails only with
``kit_runner.EXPECT_OURS_FOR_SPEC`` on.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("sglang")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import kit_runner as kr  # noqa: E402

ON_GPU = torch.cuda.is_available()


def _combos():
    for case in kr.all_cases():
        for ratio in kr.RATIOS:
            for sparse in kr.sparse_prefill_choices(case):
                route = "sparse" if sparse else "paged"
                yield pytest.param(case, ratio, sparse, id=f"{case.name}-c{ratio}-{route}")


def _sglang_runs_here() -> bool:
    from sglang_dsv4_sparse.dispatch import flashmla_status

    return ON_GPU and flashmla_status(torch.cuda.current_device())[0]


@pytest.fixture(scope="module", autouse=True)
def kit_environment():
    mp = pytest.MonkeyPatch()
    mp.setenv("SGLANG_FP8_PAGED_MQA_LOGITS_TORCH", "1")
    mp.setenv("SGLANG_OPT_USE_TOPK_V2", "0")
    if not ON_GPU:
        import sglang.srt.layers.attention.deepseek_v4_backend as parent

        # FlashMLA's scheduler metadata and the compressors' JIT planner are CUDA-only;
        # on the CPU only our backend runs, and the compressors never do here.
        mp.setattr(parent, "_create_flashmla_metadata", lambda: None)
        mp.setattr(parent, "create_paged_compressor_data", lambda **_: None)
    undo = kr.cpu_compat()
    yield
    undo()
    mp.undo()


@pytest.mark.parametrize("heads", [16, 64])
@pytest.mark.parametrize("case, ratio, sparse_prefill", list(_combos()))
def test_kit_case(case, ratio, sparse_prefill, heads):
    reason = kr.kit_cannot_seed(case, ratio, sparse_prefill)
    if reason:
        pytest.skip(reason)
    backends = ("ours", "sglang") if _sglang_runs_here() else ("ours",)
    device = "cuda" if ON_GPU else "cpu"
    results = kr.run_case(case, ratio=ratio, real_heads=heads, sparse_prefill=sparse_prefill,
                          backends=backends, device=device)
    ours = results["ours"]
    kr.assert_kit_close(ours.output, ours.expected, "ours vs the kit's reference")
    if "sglang" in results:
        theirs = results["sglang"]
        kr.assert_kit_close(theirs.output, theirs.expected, "SGLang vs the kit's reference")
        kr.assert_kit_close(ours.output, theirs.output, "ours vs SGLang")


# Committed prefixes of the CPU cases, by head count. 126 puts the drafts on the
# window's edge: with 2 drafts the second sees the first C128 row and the first
# does not, with 4 the window slides past the prefix's first rows. At 8 heads
# (our verify route groups each request's drafts) a request shorter than the
# window stands beside it; at 64 heads the interpreter's time grows with the
# query rows, so one request. (Page-crossing prefixes run in the GPU matrix.)
SPEC_TEST_PREFIXES = {8: (20, 126), 64: (126,)}


def _spec_combos():
    for kind, ratios in kr.SPEC_RATIOS.items():
        for ratio in ratios:
            for drafts in (2, 4):
                yield pytest.param(kind, ratio, drafts, id=f"{kind}-c{ratio}-d{drafts}")


@pytest.mark.parametrize("heads", [8, 64])
@pytest.mark.parametrize("kind, ratio, drafts", list(_spec_combos()))
def test_kit_spec_case(kind, ratio, drafts, heads):
    backends = ("ours", "sglang") if _sglang_runs_here() else ("ours",)
    device = "cuda" if ON_GPU else "cpu"
    results = kr.run_spec_case(kind, ratio=ratio, real_heads=heads, drafts=drafts,
                               prefix_lens=SPEC_TEST_PREFIXES[heads], backends=backends, device=device)
    ours = results["ours"]
    if kr.EXPECT_OURS_FOR_SPEC:
        assert ours.ours_ran, ours.note or f"our backend's step took route {ours.route}"
    if ours.output is None:
        pytest.skip(ours.note)
    kr.assert_kit_close(ours.output, ours.expected, f"ours ({ours.route}) vs the kit's reference")
    if "sglang" in results:
        theirs = results["sglang"]
        kr.assert_kit_close(theirs.output, theirs.expected, "SGLang vs the kit's reference")
        kr.assert_kit_close(ours.output, theirs.output, "ours vs SGLang")


def test_spec_matrix_row(tmp_path):
    """The GPU matrix's speculative row (``kit_runner.spec_row``) on the smallest case, and its summary of it."""
    backends = ("ours", "sglang") if _sglang_runs_here() else ("ours",)
    row = kr.spec_row("verify", ratio=0, real_heads=8, drafts=2, prefix_lens=(40,), backends=backends,
                      device="cuda" if ON_GPU else "cpu")
    assert row["route"] == "verify" and row["drafts"] == 2 and row["prefix_lens"] == [40]
    assert isinstance(row["ours_ran"], bool) and row["ours_route"]
    if row["status"] == "skip":  # SGLang's attention ran it, and cannot here
        assert not row["ours_ran"] and "FlashMLA" in row["why"]
    else:
        assert row["status"] == "pass", row
        assert row["ours_vs_ref"] <= 1.0
    # The matrix prints its summary and BENCHMARKS.md's table from the saved rows.
    graph_row = dict(backend="ours", case=row["case"], ratio=0, drafts=2, prefix_lens=[40], status="pass",
                     ours_ran=row["ours_ran"])
    saved = tmp_path / "sglang_kit_matrix.json"
    saved.write_text(json.dumps(dict(header=None, kit=[row], graph=[], spec_graph=[graph_row])))
    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "sglang_kit_matrix.py")
    for extra in ([], ["--markdown"]):
        done = subprocess.run([sys.executable, script, "--from-json", str(saved), *extra], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "verify" in done.stdout and f"{int(row['ours_ran'])}/1" in done.stdout, done.stdout


def test_spec_inputs_match_kit():
    """Our verify and draft-extend inputs carry what the kit's own builders give (where they import).

    The kit builds them in its ``runner_modes`` modules, which import SGLang's
    scheduler (``scripts/setup.sh --with-sglang`` installs what they need).
    """
    try:
        from sglang.test.kits.attention_unittest.runner_modes import speculative_draft_extend_runner as kit_draft
        from sglang.test.kits.attention_unittest.runner_modes import speculative_target_verify_runner as kit_verify
    except ImportError as exc:
        pytest.skip(f"the kit's speculative runners do not import here ({exc})")
    from types import SimpleNamespace

    def batch_of(case):
        # The fields the builders read, as the kit's forward batch has them.
        seq = torch.tensor(case.seq_lens, dtype=torch.int32)
        positions = [p + i for p, n in zip(case.prefix_lens, case.input_lens) for i in range(n)]
        return SimpleNamespace(
            input_ids=torch.arange(case.num_input_tokens), positions=torch.tensor(positions),
            seq_lens=seq, seq_lens_cpu=seq.clone(), seq_lens_sum=int(seq.sum()),
            req_pool_indices=torch.arange(case.batch_size, dtype=torch.int32),
        )

    for drafts in (2, 4):
        case = kr.spec_case("verify", ratio=0, real_heads=64, drafts=drafts, prefix_lens=(20, 130))
        ours, theirs = batch_of(case), batch_of(case)
        kr.prepare_verify_batch(case, ours, "cpu")
        kit_verify._prepare_target_verify_batch(theirs, case, "cpu")
        theirs.spec_info = kit_verify._make_eagle_verify_input(case, theirs, topk=1, device="cpu")
        assert torch.equal(ours.seq_lens, theirs.seq_lens) and ours.seq_lens_sum == theirs.seq_lens_sum
        for field in ("draft_token_num", "topk", "spec_steps", "num_tokens_per_req", "seq_lens_sum"):
            assert getattr(ours.spec_info, field) == getattr(theirs.spec_info, field), field
        for field in ("draft_token", "positions", "custom_mask", "retrieve_cum_len", "seq_lens_cpu"):
            assert torch.equal(getattr(ours.spec_info, field), getattr(theirs.spec_info, field)), field

        case = kr.spec_case("draft_ext", ratio=0, real_heads=64, drafts=drafts, prefix_lens=(20, 130))
        ours, theirs = batch_of(case), batch_of(case)
        kr.prepare_draft_extend_batch(case, ours, "cpu")
        theirs.spec_info = kit_draft._make_eagle_draft_extend_input(case, theirs, device="cpu")
        for field in ("num_accept_tokens_cpu", "num_tokens_per_req", "num_tokens_for_logprob_per_req"):
            assert getattr(ours.spec_info, field) == getattr(theirs.spec_info, field), field
        for field in ("num_accept_tokens", "num_correct_drafts", "positions", "seq_lens"):
            assert torch.equal(getattr(ours.spec_info, field), getattr(theirs.spec_info, field)), field
