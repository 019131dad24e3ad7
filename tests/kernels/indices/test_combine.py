import pytest
import torch

from sglang_dsv4_sparse import layout as L
from sglang_dsv4_sparse.kernels.indices import combine_topk_swa_indices, combined_index_width
from sglang_dsv4_sparse.reference import combine_topk_swa_indices_reference


def _chunk(gen, prefixes, extends, ratio, topk, window=L.SWA_WINDOW, spare_rows=0, qsl_base=0, hole_rate=0.2):
    """A chunk of requests with prefixes, laid out as the sparse prefill workspace does."""
    seq = torch.tensor(prefixes) + torch.tensor(extends)
    ext = torch.tensor(extends)
    gather = torch.minimum(seq, ext + window - 1)
    compressed = seq // ratio
    # Workspace: [all requests' compressed rows][all requests' window unions].
    compressed_base = torch.cumsum(compressed, 0) - compressed
    swa_base = compressed.sum() + torch.cumsum(gather, 0) - gather
    qsl = torch.zeros(len(extends) + 1, dtype=torch.int64)
    qsl[1:] = torch.cumsum(ext, 0)
    qsl += qsl_base
    pos = torch.cat([torch.arange(p, p + e) for p, e in zip(prefixes, extends)] + [torch.zeros(spare_rows, dtype=torch.int64)])
    num_tokens = pos.numel()
    cols = max(topk, 1) + 3
    topk_idx = torch.randint(0, 1 << 20, (num_tokens, cols), generator=gen)
    # Each query's top-k stays inside its request's compressed rows, with -1 holes.
    owner = torch.repeat_interleave(torch.arange(len(extends)), ext)
    limit = torch.cat([compressed[owner], torch.ones(spare_rows, dtype=torch.int64)]).clamp_min(1)
    topk_idx = topk_idx % limit[:, None]
    topk_idx[torch.rand(topk_idx.shape, generator=gen) < hole_rate] = -1
    return dict(
        topk_indices=topk_idx,
        query_start_loc=qsl,
        query_pos=pos,
        seq_lens=seq,
        gather_lens=gather,
        compressed_base=compressed_base,
        swa_base=swa_base,
    )


def _run(args, device, dtype, window, ratio, topk, out_dtype=None, **extra):
    dev = {k: v.to(dtype).to(device) for k, v in args.items()}
    dev.update({k: v.to(dtype).to(device) for k, v in extra.items()})
    kwargs = {}
    if out_dtype is not None:
        n = args["topk_indices"].shape[0]
        # Garbage-filled destinations: every element must be overwritten.
        kwargs["out_indices"] = torch.full((n, combined_index_width(topk, window)), 12345, dtype=out_dtype, device=device)
        kwargs["out_lens"] = torch.full((n,), 777, dtype=out_dtype, device=device)
    out, lens = combine_topk_swa_indices(
        dev.pop("topk_indices"), dev.pop("query_start_loc"), dev.pop("query_pos"), dev.pop("seq_lens"),
        dev.pop("gather_lens"), dev.pop("compressed_base"), dev.pop("swa_base"), window, ratio, topk, **kwargs, **dev,
    )
    ref, ref_lens = combine_topk_swa_indices_reference(**args, **extra, window_size=window, compress_ratio=ratio, topk=topk)
    assert out.shape == ref.shape
    assert torch.equal(out.cpu().long(), ref), (out.cpu().long() != ref).nonzero()[:5]
    assert torch.equal(lens.cpu().long(), ref_lens)
    return out, lens


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_c4_chunk_with_prefixes(gen, device, dtype):
    # Three requests: no prefix, a long prefix, a prefix shorter than the window.
    args = _chunk(gen, prefixes=[0, 2000, 50], extends=[40, 30, 25], ratio=4, topk=64)
    _run(args, device, dtype, window=32, ratio=4, topk=64)


def test_chunk_offset_spare_rows_and_garbage_outputs(gen, device):
    # query_start_loc starting mid-batch, rows past the last request, and
    # preallocated outputs full of garbage.
    args = _chunk(gen, prefixes=[500, 9], extends=[33, 20], ratio=4, topk=40, spare_rows=7, qsl_base=1234)
    for out_dtype in (torch.int32, torch.int64):
        out, lens = _run(args, device, torch.int32, window=24, ratio=4, topk=40, out_dtype=out_dtype)
        assert bool((out[-7:] == -1).all()) and bool((lens[-7:] == 0).all())


def test_swa_only_and_c128(gen, device):
    args = _chunk(gen, prefixes=[300, 0], extends=[20, 30], ratio=128, topk=0)
    _run(args, device, torch.int32, window=128, ratio=128, topk=0)
    args = _chunk(gen, prefixes=[4000, 129], extends=[20, 30], ratio=128, topk=40, hole_rate=0.0)
    _run(args, device, torch.int32, window=16, ratio=128, topk=40)


def test_odd_topk_width_and_full_holes(gen, device):
    args = _chunk(gen, prefixes=[800], extends=[40], ratio=4, topk=37, hole_rate=1.0)
    _run(args, device, torch.int32, window=8, ratio=4, topk=37)


def test_explicit_swa_indices(gen, device):
    window = 16
    args = _chunk(gen, prefixes=[100, 3], extends=[20, 12], ratio=4, topk=24)
    n = args["topk_indices"].shape[0]
    swa_lengths = torch.randint(0, window + 1, (n,), generator=gen)
    swa_indices = torch.randint(0, 300, (n, window), generator=gen)
    swa_indices[torch.rand(swa_indices.shape, generator=gen) < 0.2] = -1
    _run(args, device, torch.int32, window=window, ratio=4, topk=24, swa_indices=swa_indices, swa_lengths=swa_lengths)


def test_zero_tokens_and_empty_batch(gen, device):
    empty = torch.zeros(0, dtype=torch.int32, device=device)
    out, lens = combine_topk_swa_indices(
        torch.zeros((0, 512), dtype=torch.int32, device=device), torch.zeros(1, dtype=torch.int32, device=device),
        empty, empty, empty, empty, empty, 128, 4, 512,
    )
    assert out.shape == (0, 640) and lens.shape == (0,)
    # Queries but no request: all rows -1.
    out, lens = combine_topk_swa_indices(
        torch.zeros((3, 8), dtype=torch.int32, device=device), torch.zeros(1, dtype=torch.int32, device=device),
        torch.zeros(3, dtype=torch.int32, device=device), empty, empty, empty, empty, 8, 4, 8,
    )
    assert bool((out == -1).all()) and bool((lens == 0).all())


def test_bad_arguments(device):
    i = lambda *s: torch.zeros(s, dtype=torch.int32, device=device)  # noqa: E731
    good = [i(4, 16), i(3), i(4), i(2), i(2), i(2), i(2)]
    with pytest.raises(ValueError, match="topk_indices has 16 columns"):
        combine_topk_swa_indices(*good, 8, 4, 32)
    with pytest.raises(ValueError, match="query_start_loc"):
        combine_topk_swa_indices(good[0], i(2), *good[2:], 8, 4, 16)
    with pytest.raises(TypeError, match="query_pos"):
        combine_topk_swa_indices(good[0], good[1], good[2].float(), *good[3:], 8, 4, 16)
    with pytest.raises(ValueError, match="compress_ratio"):
        combine_topk_swa_indices(*good, 8, 0, 16)
    with pytest.raises(ValueError, match="out_indices"):
        combine_topk_swa_indices(*good, 8, 4, 16, out_indices=i(4, 16))
    with pytest.raises(ValueError, match="swa_indices and swa_lengths"):
        combine_topk_swa_indices(*good, 8, 4, 16, swa_indices=i(4, 8))


def test_row_offsets_past_2_31_entries(gen, device):
    # Rows 2**29 entries apart: query 4's row starts at entry 2**31 of both
    # the top-k input and the output, which only int64 row math reaches.
    args = _chunk(gen, prefixes=[1000], extends=[5], ratio=4, topk=16)
    window, topk = 8, 16
    width = combined_index_width(topk, window)
    stride = 2**29
    big_in = torch.empty(4 * stride + args["topk_indices"].shape[1], dtype=torch.int32, device=device)
    big_out = torch.empty(4 * stride + width, dtype=torch.int32, device=device)
    topk_in = big_in.as_strided((5, args["topk_indices"].shape[1]), (stride, 1))
    topk_in.copy_(args["topk_indices"].to(device))
    out = big_out.as_strided((5, width), (stride, 1))
    dev = {k: v.int().to(device) for k, v in args.items() if k != "topk_indices"}
    combine_topk_swa_indices(
        topk_in, dev["query_start_loc"], dev["query_pos"], dev["seq_lens"], dev["gather_lens"],
        dev["compressed_base"], dev["swa_base"], window, 4, topk, out_indices=out,
    )
    ref, _ = combine_topk_swa_indices_reference(**args, window_size=window, compress_ratio=4, topk=topk)
    assert torch.equal(out.cpu().long(), ref)
    del big_in, big_out


def test_out_of_range_inputs_give_minus_one(gen, device):
    # Positions past seq_len and negative ones, top-k entries past their
    # request's compressed rows, and a workspace smaller than the rows the
    # bases point at: each such entry is -1, as in the reference.
    window, topk = 16, 24
    args = _chunk(gen, prefixes=[100, 40], extends=[20, 12], ratio=4, topk=topk, hole_rate=0.1)
    args["query_pos"][3] += 50
    args["query_pos"][25] = -3
    args["topk_indices"][5, :4] = torch.tensor([10**6, -2, 30, 2**40])
    compressed_lens = args["seq_lens"] // 4
    kv_rows = int(args["swa_base"][1]) + 7  # cuts into request 1's window union
    dev = {k: v.to(device) for k, v in args.items()}
    out, lens = combine_topk_swa_indices(
        dev["topk_indices"], dev["query_start_loc"], dev["query_pos"], dev["seq_lens"], dev["gather_lens"],
        dev["compressed_base"], dev["swa_base"], window, 4, topk,
        compressed_lens=compressed_lens.to(device), kv_rows=kv_rows,
    )
    ref, ref_lens = combine_topk_swa_indices_reference(
        **args, window_size=window, compress_ratio=4, topk=topk, compressed_lens=compressed_lens, kv_rows=kv_rows
    )
    assert torch.equal(out.cpu().long(), ref) and torch.equal(lens.cpu().long(), ref_lens)
    assert int(out.max()) < kv_rows and int(lens[25]) == 0


def test_explicit_swa_lengths_past_the_window_are_clamped(gen, device):
    window = 8
    args = _chunk(gen, prefixes=[30], extends=[6], ratio=4, topk=8)
    swa_indices = torch.randint(0, 40, (6, window), generator=gen)
    swa_lengths = torch.tensor([0, 3, window, window + 1, 10**6, -5])
    _run(args, device, torch.int64, window=window, ratio=4, topk=8, swa_indices=swa_indices, swa_lengths=swa_lengths)


def test_bounds_flag_names_the_argument(gen, device, monkeypatch):
    window, topk = 16, 24
    monkeypatch.setenv("SGLANG_DSV4_SPARSE_CHECK_BOUNDS", "1")

    def call(args, **kw):
        dev = {k: v.to(device) for k, v in args.items()}
        kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        return combine_topk_swa_indices(
            dev["topk_indices"], dev["query_start_loc"], dev["query_pos"], dev["seq_lens"], dev["gather_lens"],
            dev["compressed_base"], dev["swa_base"], window, 4, topk, **kw,
        )

    fresh = lambda: _chunk(gen, prefixes=[100, 40], extends=[20, 12], ratio=4, topk=topk)  # noqa: E731
    call(fresh(), compressed_lens=fresh()["seq_lens"] // 4)
    args = fresh()
    args["query_pos"][3] = int(args["seq_lens"][0])
    with pytest.raises(ValueError, match=r"query_pos\[3\]"):
        call(args)
    args = fresh()
    args["topk_indices"][30, 0] = -2
    with pytest.raises(ValueError, match="topk_indices"):
        call(args)
    args = fresh()
    args["topk_indices"][30, 0] = int(args["seq_lens"][1]) // 4
    with pytest.raises(ValueError, match="topk_indices"):
        call(args, compressed_lens=args["seq_lens"] // 4)
    args = fresh()
    with pytest.raises(ValueError, match="kv_rows"):
        call(args, kv_rows=int(args["swa_base"][1]))
