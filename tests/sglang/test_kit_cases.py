"""SGLang's own DSv4 attention test kit on this package's backend (``kit_runner.py`` says how).

Every ``make_dsv4_cases`` case as a window-only, C4 and C128 layer, extends
with sparse prefill on and off, at a tensor-parallel rank's 16 heads (query
zero-padded to 64, as the model hands it over) and at 64 heads, against the
kit's reference and with the kit's tolerance. On CPU the kernels run in
Triton's interpreter; on a GPU with FlashMLA, SGLang's backend runs the same
inputs too and both must agree. (``scripts/sglang_kit_matrix.py`` runs the
whole matrix on a GPU, 8 to 128 heads, with a summary table.)
"""

import os
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
