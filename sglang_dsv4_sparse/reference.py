"""Pure-torch references for every kernel in the package: the test oracles.

They favour being obviously right over being fast: plain loops over requests
and queries, int64 everywhere, fp32/fp64 arithmetic.  (The cache quantizer and
dequant reference live with the layout in :mod:`sglang_dsv4_sparse.layout`;
the references of the benchmark-only kernels in ``benchmarks/`` live with their
tests in ``tests/benchmarks/``.)
"""

from __future__ import annotations

from typing import Optional

import torch

from . import layout as L


def build_swa_token_ids_reference(
    seq_lens, extend_seq_lens, req_pool_indices, req_to_token, full_to_swa, swa_window: int
):
    """Reference for :func:`~sglang_dsv4_sparse.kernels.indices.build_swa_token_ids`.

    A pool row or position outside ``req_to_token``, or a full-cache id
    outside ``full_to_swa``, gives -1.
    """
    ids, first_pos, gather_lens = [], [], []
    pool_rows, max_len = req_to_token.shape
    for r in range(seq_lens.shape[0]):
        seq_len, ext = int(seq_lens[r]), int(extend_seq_lens[r])
        g = min(seq_len, ext + swa_window - 1)
        first = seq_len - g
        pool_row = int(req_pool_indices[r])
        row = []
        for pos in range(first, seq_len):
            full = int(req_to_token[pool_row, pos]) if 0 <= pool_row < pool_rows and 0 <= pos < max_len else -1
            row.append(int(full_to_swa[full]) if 0 <= full < full_to_swa.shape[0] else -1)
        ids.append(torch.tensor(row, dtype=torch.int64))
        first_pos.append(first)
        gather_lens.append(g)
    gl = torch.tensor(gather_lens, dtype=torch.int64)
    offsets = torch.zeros(len(gather_lens) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(gl, 0)
    flat = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.int64)
    return flat, torch.tensor(first_pos, dtype=torch.int64), gl, offsets


def combine_topk_swa_indices_reference(
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
    swa_indices: Optional[torch.Tensor] = None,
    swa_lengths: Optional[torch.Tensor] = None,
    compressed_lens: Optional[torch.Tensor] = None,
    kv_rows: Optional[int] = None,
    out_dtype: torch.dtype = torch.int32,
):
    """Reference for :func:`~sglang_dsv4_sparse.kernels.indices.combine_topk_swa_indices`.

    Masks as the kernel does: lengths clamped to ``[0, width]``, a top-k entry
    outside ``[0, compressed_lens[r])``, a window row outside the request's
    window union and any entry outside ``[0, kv_rows)`` (without ``kv_rows``:
    one ``out_dtype`` cannot hold) are -1.
    """
    num_tokens = topk_indices.shape[0]
    width = -(-(topk + window_size) // L.INDEX_ROW_ALIGN) * L.INDEX_ROW_ALIGN
    out = torch.full((num_tokens, width), -1, dtype=torch.int64)
    lens = torch.zeros(num_tokens, dtype=torch.int64)
    qsl = query_start_loc.long().cpu() - int(query_start_loc[0])
    for r in range(seq_lens.shape[0]):
        gather_len = int(gather_lens[r])
        gather_start = int(seq_lens[r]) - gather_len
        limit = int(compressed_lens[r]) if compressed_lens is not None else None
        for t in range(int(qsl[r]), min(int(qsl[r + 1]), num_tokens)):
            pos = int(query_pos[t])
            k = max(min((pos + 1) // compress_ratio, topk), 0)
            row = topk_indices[t, :k].long()
            ok = (row >= 0) if limit is None else (row >= 0) & (row < limit)
            out[t, :k] = torch.where(ok, row + int(compressed_base[r]), -1)
            if swa_indices is None:
                w = max(min(pos + 1, window_size), 0)
                rel = torch.arange(w) + pos - w + 1 - gather_start
                out[t, k : k + w] = torch.where((rel >= 0) & (rel < gather_len), rel + int(swa_base[r]), -1)
            else:
                w = max(min(int(swa_lengths[t]), window_size), 0)
                rel = swa_indices[t, :w].long()
                out[t, k : k + w] = torch.where(rel >= 0, rel + int(swa_base[r]), -1)
            lens[t] = k + w
    top = kv_rows if kv_rows is not None else (2**31 if out_dtype == torch.int32 else 2**62)
    out = torch.where((out >= 0) & (out < top), out, -1)
    return out, lens


def request_of_rows_reference(bounds: torch.Tensor, total: int) -> torch.Tensor:
    """The last request ``r`` in ``[0, R)`` with ``bounds[r] <= row``, for each of ``total`` rows (int64)."""
    b = [int(x) for x in bounds.tolist()]
    out = []
    for row in range(total):
        r = 0
        for i in range(len(b) - 1):
            if b[i] <= row:
                r = i
        out.append(r)
    return torch.tensor(out, dtype=torch.int64)


def compressed_token_ids_reference(bounds, table, page_size: int, total: int, capacity: int = 2**62) -> torch.Tensor:
    """Row ``j`` of request ``r`` is ``table[r, j // P] * P + j % P``; -1 past the table, for a negative page or past ``capacity``."""
    req = request_of_rows_reference(bounds, total).tolist()
    b = [int(x) for x in bounds.tolist()]
    out = []
    for j in range(total):
        r = req[j]
        local = j - b[r]
        col = local // page_size
        if r >= table.shape[0] or col >= table.shape[1]:
            out.append(-1)
            continue
        page = int(table[r, col])
        tid = page * page_size + local % page_size
        out.append(tid if page >= 0 and tid < capacity else -1)
    return torch.tensor(out, dtype=torch.int64)


def fold_shared_rows_reference(req_of_token, query_pos, bounds, group_size: int, width: int, ratio: int = 128):
    """Each run of ``group_size`` rows of one request shares the rows its first query reads (core/fold.py)."""
    t = req_of_token.shape[0]
    groups = t // group_size
    b = [int(x) for x in bounds.tolist()]
    indices = torch.full((groups, width), -1, dtype=torch.int32)
    lens = torch.zeros(groups, dtype=torch.int32)
    skip = torch.zeros(-(-t // group_size), dtype=torch.int32)
    for g in range(groups):
        first, last = g * group_size, g * group_size + group_size - 1
        r = int(req_of_token[first])
        if r != int(req_of_token[last]) or not 0 <= r < len(b) - 1:
            continue
        shared = min(max((int(query_pos[first]) + 1) // ratio, 0), b[r + 1] - b[r])
        indices[g, :shared] = torch.arange(b[r], b[r] + shared, dtype=torch.int32)[:width]
        lens[g] = skip[g] = shared
    return indices, lens, skip


def sparse_attention_reference(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sm_scale: float,
    d_v: int = L.HEAD_DIM,
    attn_sink: Optional[torch.Tensor] = None,
    topk_length: Optional[torch.Tensor] = None,
):
    """fp32 sparse MLA attention with FlashMLA's ``flash_mla_sparse_fwd`` contract.

    ``q [s_q, h, d]``, ``kv [s_kv, 1, d]``, ``indices [s_q, 1, topk]``: an index
    of -1 or >= s_kv, or at a column >= ``topk_length[s]``, is skipped.
    Returns ``(out [s_q, h, d_v] fp32, max_logits [s_q, h], lse [s_q, h])`` with
    the natural-log lse; a query with no valid key gives ``out = 0``,
    ``max_logits = -inf`` and ``lse = +inf`` (FlashMLA's convention: its kernels
    and its own reference report an empty row's log-sum-exp as +inf), and a
    head whose q holds NaN or inf gives NaN (see ``_attend``).  With
    ``attn_sink`` the output is scaled by ``1 / (1 + exp(attn_sink[h] - lse))``
    and lse is unchanged.
    """
    s_q, h, _ = q.shape
    s_kv = kv.shape[0]
    idx = indices[:, 0, :].long()
    valid = (idx >= 0) & (idx < s_kv)
    if topk_length is not None:
        valid &= torch.arange(idx.shape[1], device=idx.device)[None, :] < topk_length.long()[:, None]
    keys = kv[:, 0, :].float()[idx.clamp(0, max(s_kv - 1, 0))]  # [s_q, topk, d]
    return _attend(q, keys, valid, sm_scale, attn_sink, d_v)


def _attend(q: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, sm_scale: float, attn_sink, d_v: int = L.HEAD_DIM):
    """Softmax attention of ``q [s, h, d]`` over ``keys [s, k, d]`` where ``valid [s, k]`` (values: ``keys[..., :d_v]``).

    Computed as the kernels' online softmax ends up: with the row's max
    logit ``m``, ``p = exp(logit - m)``, ``out = p @ keys / sum(p)``,
    ``lse = m + log(sum(p))``.  So a NaN logit (NaN or inf in q) makes the
    head's ``out``, ``max_logits`` and ``lse`` NaN rather than an empty row,
    and only a row whose logits are all ``-inf`` is empty (``out = 0``,
    ``max_logits = -inf``, ``lse = +inf``).  Returns fp32
    ``(out [s, h, d_v], max_logits [s, h], lse [s, h])``.
    """
    # Skipped slots may hold any bytes: zero them so 0 * inf cannot appear.
    keys = keys.masked_fill(~valid[..., None], 0.0)
    logits = torch.einsum("shd,skd->shk", q.float(), keys) * sm_scale
    logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
    if logits.shape[-1]:
        max_logits = logits.amax(dim=-1)
    else:  # no index columns at all: every row is empty
        max_logits = logits.new_full(logits.shape[:-1], float("-inf"))
    m_ref = torch.where(torch.isneginf(max_logits), 0.0, max_logits)
    probs = torch.exp(logits - m_ref[..., None])
    total = probs.sum(dim=-1)
    empty = total == 0
    out = torch.einsum("shk,skd->shd", probs, keys[..., :d_v]) / torch.where(empty, 1.0, total)[..., None]
    lse = torch.where(empty, float("inf"), m_ref + torch.log(total))
    # A +inf logit leaves the max at +inf but the sum NaN: report the head NaN throughout.
    max_logits = torch.where(torch.isnan(total), float("nan"), max_logits)
    if attn_sink is not None:
        out = out / (1 + torch.exp(attn_sink.float()[None, :] - lse))[..., None]
    return out, max_logits, lse


def merge_partials_reference(out_a, lse_a, out_b, lse_b, attn_sink=None):
    """Two partial attentions of the same queries over disjoint keys merged by log-sum-exp, then the sink.

    Partials are ``(out [s, h, d], lse [s, h])`` with +inf (FlashMLA's marker)
    for an empty one. Returns fp32 ``(out, lse)`` in the same convention.
    """
    la = torch.where(lse_a == float("inf"), float("-inf"), lse_a.double())
    lb = torch.where(lse_b == float("inf"), float("-inf"), lse_b.double())
    lse = torch.logaddexp(la, lb)
    empty = torch.isneginf(lse)
    safe = torch.where(empty, 0.0, lse)
    wa = torch.where(empty, 0.0, torch.exp(la - safe))[..., None]
    wb = torch.where(empty, 0.0, torch.exp(lb - safe))[..., None]
    out = out_a.double() * wa + out_b.double() * wb
    if attn_sink is not None:
        out = out / (1 + torch.exp(attn_sink.double()[None, :] - lse))[..., None]
    return out.float(), torch.where(empty, float("inf"), lse).float()


def shared_rows_attention_reference(
    q, kv, req_of_token, query_pos, seq_lens, gather_lens, swa_base, window, compress_ratio=0,
    compressed_base=None, attn_sink=None, skip_rows=None, prior=None, sm_scale: float = L.SOFTMAX_SCALE,
):
    """Reference for :func:`~sglang_dsv4_sparse.kernels.sparse_attn.shared_rows_attention`.

    Query ``t`` (request ``r``, position ``p`` clamped to the request's last
    token) reads workspace rows ``compressed_base[r] + j`` for ``skip <= j <
    (p + 1) // compress_ratio`` (``skip``: its tile's ``skip_rows`` entry, tiles
    of ``64 // h`` queries) and ``swa_base[r] + x - (seq_len - gather_len)``
    for window positions ``x`` in ``[max(p - window + 1, seq_len - gather_len, 0), p]``;
    rows outside ``kv`` and requests outside ``seq_lens`` read nothing.
    Returns fp32 ``(out, lse)``, merged with ``prior`` and the sink applied once.
    """
    num_tokens, heads, _ = q.shape
    queries = max(1, 64 // heads)
    s_kv = kv.shape[0]
    rows = []
    for t in range(num_tokens):
        r = int(req_of_token[t])
        ids = []
        if 0 <= r < seq_lens.shape[0]:
            seq_len = int(seq_lens[r])
            p = min(int(query_pos[t]), seq_len - 1)
            gather_start = seq_len - int(gather_lens[r])
            if compress_ratio:
                skip = max(int(skip_rows[t // queries]), 0) if skip_rows is not None else 0
                ids += [int(compressed_base[r]) + j for j in range(skip, (p + 1) // compress_ratio)]
            first = max(p - window + 1, gather_start, 0)
            ids += [int(swa_base[r]) + x - gather_start for x in range(first, p + 1)]
        rows.append([i for i in ids if 0 <= i < s_kv])
    width = max([len(x) for x in rows] + [1])
    indices = torch.full((num_tokens, 1, width), -1, dtype=torch.int64)
    for t, ids in enumerate(rows):
        indices[t, 0, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    out, _, lse = sparse_attention_reference(q.cpu(), kv.cpu(), indices, sm_scale)
    if prior is not None:
        n = prior[0].shape[0]
        merged, merged_lse = merge_partials_reference(prior[0].cpu().float(), prior[1].cpu(), out[:n], lse[:n])
        out, lse = torch.cat([merged, out[n:]]), torch.cat([merged_lse, lse[n:]])
    if attn_sink is not None:
        out, lse = merge_partials_reference(out, lse, torch.zeros_like(out), torch.full_like(lse, float("inf")), attn_sink.cpu())
    return out, lse


def paged_rows_and_indices(
    k_cache: torch.Tensor, indices: torch.Tensor, page_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dequantize every cache row an index tensor names, and re-index into them.

    Returns ``(kv [n, 1, 512] bf16, local [same shape as indices])`` with -1 for
    ids outside ``[0, num_pages * page_size)`` (holes, and ids past the cache,
    which the fused kernel skips too), so paged decode can be checked with the
    materialized reference.
    """
    capacity = L.as_byte_cache(k_cache, page_size, "k_cache").shape[0] * page_size
    flat = indices.reshape(-1).long()
    flat = torch.where((flat >= 0) & (flat < capacity), flat, -1)
    uniq, inverse = torch.unique(flat, return_inverse=True)
    rows = L.dequantize_paged_reference(k_cache, uniq.clamp_min(0), page_size)
    local = torch.where(flat >= 0, inverse, -1).view(indices.shape)
    return rows, local


def sparse_decode_paged_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    page_size: int,
    indices: torch.Tensor,
    topk_length: Optional[torch.Tensor],
    softmax_scale: float,
    attn_sink: Optional[torch.Tensor] = None,
    extra_k_cache: Optional[torch.Tensor] = None,
    extra_page_size: Optional[int] = None,
    extra_indices: Optional[torch.Tensor] = None,
    extra_topk_length: Optional[torch.Tensor] = None,
    d_v: int = L.HEAD_DIM,
):
    """fp32 reference for the fused paged-fp8 sparse decode.

    ``q [b, s_q, h, 512]``; ``indices [b, s_q, topk]`` token ids into ``k_cache``
    (-1 skipped, and only the first ``topk_length[b]`` columns count); the
    optional extra cache is attended in the same softmax.  Returns
    ``(out [b, s_q, h, d_v] fp32, lse [b, h, s_q])``: lse in FlashMLA's
    ``flash_mla_with_kvcache`` layout (a transposed view of ``[b, s_q, h]``),
    ``+inf`` for a row with no valid key (whose output is 0).
    """
    b, s_q, h, d = q.shape
    parts = []
    for cache, ps, idx, lens in (
        (k_cache, page_size, indices, topk_length),
        (extra_k_cache, extra_page_size, extra_indices, extra_topk_length),
    ):
        if cache is None:
            continue
        ids = idx.long().clone()
        if lens is not None:
            cols = torch.arange(ids.shape[-1], device=ids.device)
            ids = torch.where(cols[None, None, :] < lens.long()[:, None, None], ids, -1)
        rows, local = paged_rows_and_indices(cache, ids, ps)
        parts.append((rows, local))
    offset = 0
    kv_parts, idx_parts = [], []
    for rows, local in parts:
        kv_parts.append(rows)
        idx_parts.append(torch.where(local >= 0, local + offset, -1))
        offset += rows.shape[0]
    kv = torch.cat(kv_parts, dim=0)
    idx = torch.cat(idx_parts, dim=-1).reshape(b * s_q, 1, -1)
    out, _, lse = sparse_attention_reference(
        q.reshape(b * s_q, h, d), kv, idx, softmax_scale, d_v=d_v, attn_sink=attn_sink
    )
    return out.view(b, s_q, h, d_v), lse.view(b, s_q, h).transpose(1, 2)


def sparse_verify_paged_reference(
    q: torch.Tensor,
    query_start_loc: torch.Tensor,
    swa_cache: torch.Tensor,
    swa_page_size: int,
    swa_indices: torch.Tensor,
    swa_lens: torch.Tensor,
    sm_scale: float,
    attn_sink: Optional[torch.Tensor] = None,
    extra_k_cache: Optional[torch.Tensor] = None,
    extra_page_size: Optional[int] = None,
    extra_indices: Optional[torch.Tensor] = None,
    extra_lens: Optional[torch.Tensor] = None,
    extra_shared: bool = False,
):
    """Reference for :func:`~sglang_dsv4_sparse.kernels.sparse_attn.sparse_mla_verify_paged`.

    A verify step is, by definition, every draft token run as a paged decode
    query of its own: this is :func:`sparse_decode_paged_reference` on each
    token's own rows (``q [T, h, 512]`` as ``T`` rows of one query, ``swa_indices
    [T, W]`` / ``swa_lens [T]`` the primary rows and lengths, the optional
    ``extra_indices [T, K]`` / ``extra_lens [T]`` the compressed ones), with
    the same skipping, sink and empty-row rule.  ``query_start_loc`` and
    ``extra_shared`` describe how the kernel shares rows between the tokens of a
    request and do not change the result; they are taken (and ignored) so that
    the two signatures match.  Returns fp32 ``(out [T, h, 512], lse [T, h])``.
    """
    del query_start_loc, extra_shared
    num_tokens, heads, dim = q.shape
    if num_tokens == 0:
        return q.new_zeros((0, heads, dim), dtype=torch.float32), q.new_zeros((0, heads), dtype=torch.float32)
    out, lse = sparse_decode_paged_reference(
        q.view(num_tokens, 1, heads, dim), swa_cache, swa_page_size, swa_indices.unsqueeze(1), swa_lens, sm_scale,
        attn_sink, extra_k_cache, extra_page_size, None if extra_indices is None else extra_indices.unsqueeze(1),
        extra_lens,
    )
    return out[:, 0], lse[:, :, 0]


def layer_attention_reference(
    inputs,
    q: torch.Tensor,
    swa_cache: torch.Tensor,
    compress_ratio: int,
    compressed_cache: Optional[torch.Tensor] = None,
    topk_indices: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    sm_scale: float = L.SOFTMAX_SCALE,
    query_block: int = 256,
) -> torch.Tensor:
    """Dense fp32 attention of one DSv4 layer, straight from the model's definition.

    ``inputs`` is a :class:`~sglang_dsv4_sparse.core.plan.StepInputs`. Query ``t``
    of request ``r`` at position ``pos`` attends to its window (the last
    ``min(pos + 1, window)`` positions, through ``req_to_token`` and
    ``full_to_swa`` into ``swa_cache``) and, for C4, to the first
    ``min((pos + 1) // 4, k)`` entries of its top-k row (-1 skipped), or, for
    C128, to compressed rows ``0 .. (pos + 1) // 128 - 1``; compressed row ``j``
    is token ``page_table[r, j // P] * P + j % P``. Nothing here uses the plan.
    Returns ``[T, h, 512]`` fp32.
    """
    device = q.device
    ext = [int(e) for e in inputs.extend_lens_cpu]
    req_of_token = torch.repeat_interleave(torch.arange(len(ext), device=device), torch.tensor(ext, device=device))
    if inputs.positions is not None:
        pos = inputs.positions.to(torch.int64)
    else:
        pos = torch.cat([torch.arange(int(s) - e, int(s), device=device) for s, e in zip(inputs.seq_lens_cpu, ext)])
    window = inputs.window
    out = torch.empty(q.shape, dtype=torch.float32, device=device)
    for a in range(0, q.shape[0], query_block):
        b = min(a + query_block, q.shape[0])
        req, p = req_of_token[a:b], pos[a:b]
        w = torch.clamp(p + 1, max=window)
        cols = torch.arange(window, device=device)
        win_pos = p[:, None] - w[:, None] + 1 + cols[None, :]
        win_ok = cols[None, :] < w[:, None]
        pool = inputs.req_pool_indices.to(torch.int64)[req]
        full = inputs.req_to_token[pool[:, None], win_pos.clamp_min(0)].to(torch.int64)
        swa_ids = torch.where(win_ok, inputs.full_to_swa[full].to(torch.int64), -1)
        parts = [(swa_cache, inputs.swa_page_size, swa_ids)]
        if compress_ratio:
            table = inputs.compressed_page_tables[compress_ratio]
            page_size = inputs.compressed_page_sizes[compress_ratio]
            if compress_ratio == 4:
                local = topk_indices[a:b].to(torch.int64)
                k = local.shape[1]
                n = torch.clamp(torch.div(p + 1, 4, rounding_mode="floor"), max=k)
                ok = (torch.arange(k, device=device)[None, :] < n[:, None]) & (local >= 0)
            else:
                n = torch.div(p + 1, compress_ratio, rounding_mode="floor")
                k = max(int(n.max()), 1)
                local = torch.arange(k, device=device)[None, :].expand(b - a, k)
                ok = local < n[:, None]
            j = local.clamp_min(0)
            page = table[req[:, None], torch.div(j, page_size, rounding_mode="floor").clamp(max=table.shape[1] - 1)]
            ids = torch.where(ok, page.to(torch.int64) * page_size + j % page_size, -1)
            parts.append((compressed_cache, page_size, ids))
        keys, valid = [], []
        for cache, page_size, ids in parts:
            rows = L.dequantize_paged_reference(cache, ids.clamp_min(0).reshape(-1), page_size)
            keys.append(rows.view(b - a, ids.shape[1], L.HEAD_DIM).float())
            valid.append(ids >= 0)
        keys, valid = torch.cat(keys, 1), torch.cat(valid, 1)
        out[a:b] = _attend(q[a:b], keys, valid, sm_scale, attn_sink)[0]
    return out


# FlashMLA's own output tolerance (abs 1e-3, rel 2.01/128) holds element by
# element only where an output element is not much smaller than its row: the
# kernels (FlashMLA's and ours) round the softmax weights P to bf16 before
# P @ V, so an element's error follows the row's magnitude (2**-8 of the
# largest |value| in the head's output row), not its own. Outputs are compared
# with that extra term, and with a relative norm error of at most 1e-2.
OUT_ATOL, OUT_RTOL, OUT_ROW_RTOL = 1e-3, 2.01 / 128, 2.0**-8


def attention_tolerance(ref: torch.Tensor) -> torch.Tensor:
    """Per-element tolerance (fp32) of an attention output against ``ref``: FlashMLA's plus the bf16-P row term."""
    ref = ref.float()
    return OUT_ATOL + OUT_RTOL * ref.abs() + OUT_ROW_RTOL * ref.abs().amax(dim=-1, keepdim=True)
