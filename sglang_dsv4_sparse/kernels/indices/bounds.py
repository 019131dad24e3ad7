"""The host-synchronising checks behind ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1`` for the index kernels.

Without the flag the kernels mask what these reject (the entry becomes -1);
with it, each input the kernels would have to mask raises ``ValueError``
naming the argument, so a caller's bug shows up where it is made.
"""

from __future__ import annotations

import torch

from ...validation import check_ids_in_range


def check_swa_token_ids_bounds(
    seq_lens, extend_seq_lens, req_pool_indices, req_to_token, full_to_swa, first_pos, offsets, total_swa
) -> None:
    """Every id ``build_swa_token_ids`` looks up lies inside its table."""
    if seq_lens.numel():
        if int(seq_lens.min()) < 0:
            raise ValueError(f"seq_lens must be >= 0, found {int(seq_lens.min())}")
        if int(seq_lens.max()) > req_to_token.shape[1]:
            raise ValueError(f"seq_lens reaches {int(seq_lens.max())}, past req_to_token's {req_to_token.shape[1]} columns")
        if bool((extend_seq_lens > seq_lens).any()) or bool((extend_seq_lens < 0).any()):
            raise ValueError("extend_seq_lens must lie in [0, seq_lens]")
    if int(offsets[-1]) != total_swa:
        raise ValueError(f"total_swa={total_swa} but the window unions add up to {int(offsets[-1])}")
    if seq_lens.numel() == 0:
        return
    check_ids_in_range("req_pool_indices", req_pool_indices, req_to_token.shape[0])
    used = req_to_token[req_pool_indices.long()]
    cols = torch.arange(req_to_token.shape[1], device=used.device)
    first = first_pos.long()
    in_window = (cols[None, :] >= first[:, None]) & (cols[None, :] < seq_lens[:, None].long())
    ids = used[in_window]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= full_to_swa.shape[0]):
        raise ValueError(f"req_to_token holds ids outside full_to_swa's [0, {full_to_swa.shape[0]})")


def check_combine_bounds(
    topk_indices,
    query_start_loc,
    query_pos,
    seq_lens,
    gather_lens,
    compressed_base,
    swa_base,
    window_size: int,
    compress_ratio: int,
    topk: int,
    out_indices,
    swa_indices,
    swa_lengths,
    compressed_lens,
    kv_rows,
) -> None:
    """Every row ``combine_topk_swa_indices`` writes is one its inputs describe."""
    num_tokens = topk_indices.shape[0]
    qsl = query_start_loc.long().cpu()
    owned = int(qsl[-1]) - int(qsl[0])
    if owned > num_tokens or bool((qsl[1:] < qsl[:-1]).any()):
        raise ValueError(f"query_start_loc must be non-decreasing and span at most {num_tokens} queries, spans {owned}")
    seq, gather = seq_lens.long().cpu(), gather_lens.long().cpu()
    if bool((gather > seq).any()) or bool((gather < 0).any()):
        raise ValueError("gather_lens must lie in [0, seq_lens]")
    num_reqs = seq.numel()
    if out_indices.dtype == torch.int32 and num_reqs:
        top = max(int(compressed_base.max()), int(swa_base.max())) + int(seq.max())
        if top >= 2**31:
            raise ValueError(f"workspace rows reach {top}, past what int32 out_indices can hold")
    if owned == 0:
        return
    req = torch.repeat_interleave(torch.arange(num_reqs), qsl[1:] - qsl[:-1])
    pos = query_pos[:owned].long().cpu()
    bad = (pos < 0) | (pos >= seq[req])
    if bool(bad.any()):
        t = int(bad.nonzero()[0])
        raise ValueError(
            f"query_pos[{t}] = {int(pos[t])} lies outside [0, seq_lens[{int(req[t])}] = {int(seq[req[t]])})"
        )
    swa_base_cpu = swa_base.long().cpu()
    if swa_indices is None:
        swa_len = torch.clamp(pos + 1, max=window_size)
        if bool((pos - swa_len + 1 < seq[req] - gather[req]).any()):
            raise ValueError("gather_lens must cover each query's window (the window union of its request)")
        window_end = swa_base_cpu + gather
    else:
        lens = swa_lengths[:owned].long().cpu()
        if bool((lens < 0).any()) or bool((lens > window_size).any()):
            raise ValueError(f"swa_lengths must lie in [0, window_size={window_size}]")
        rel = swa_indices[:owned].long().cpu()
        read = torch.where(torch.arange(window_size)[None, :] < lens[:, None], rel, -1)
        check_ids_in_range("swa_indices", read, 2**62, allow_negative=True)
        reach = torch.where(read >= 0, swa_base_cpu[req][:, None] + read + 1, 0).amax(dim=1)
        window_end = torch.zeros(num_reqs, dtype=torch.int64).index_reduce_(0, req, reach, "amax")
    if topk:
        k = torch.clamp(torch.div(pos + 1, compress_ratio, rounding_mode="floor"), max=topk)
        picks = topk_indices[:owned, :topk].long().cpu()
        picks = torch.where(torch.arange(topk)[None, :] < k[:, None], picks, -1)
        limit = compressed_lens.long().cpu()[req] if compressed_lens is not None else torch.full_like(req, 2**62)
        bad = (picks < -1) | (picks >= limit[:, None])
        if bool(bad.any()):
            t, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"topk_indices[{t}, {j}] = {int(picks[t, j])}: entries a query reads must be -1 (a hole) or "
                f"lie in [0, compressed_lens) of its request ({int(limit[t])})"
            )
        compressed_end = torch.where(picks >= 0, compressed_base.long().cpu()[req][:, None] + picks + 1, 0)
    else:
        compressed_end = torch.zeros(1, dtype=torch.int64)
    if kv_rows is not None:
        reach = max(int(compressed_end.max()), int(window_end[torch.unique(req)].max()))
        if reach > kv_rows:
            raise ValueError(f"the index rows reach workspace row {reach - 1}, past kv_rows={kv_rows}")
