"""The host-synchronising checks behind ``SGLANG_DSV4_SPARSE_CHECK_BOUNDS=1`` for a step and its layers.

Without the flag the plan and the kernels turn every out-of-range id into a
hole (-1) and read nothing for it. With the flag these checks run first and
raise ``ValueError`` naming the argument at fault: host copies that disagree
with their tensors, lengths and positions past the tables, ids that do not
map into the next table or cache. -1 is the one negative id allowed where ids
may have holes (``full_to_swa``'s values, top-k entries).
"""

from __future__ import annotations

import torch

from ..validation import check_host_copy, check_ids_in_range


def _first(bad: torch.Tensor) -> tuple:
    return tuple(int(v) for v in bad.nonzero()[0])


def _positions(inputs, seq: torch.Tensor, ext: torch.Tensor, req: torch.Tensor) -> torch.Tensor:
    """Each query's position (host int64), checked to lie in [0, seq_len) of its request."""
    if inputs.positions is None:
        starts = torch.cumsum(ext, 0) - ext
        return (seq - ext)[req] + torch.arange(req.numel()) - starts[req]
    pos = inputs.positions.long().cpu()
    bad = (pos < 0) | (pos >= seq[req])
    if bool(bad.any()):
        (t,) = _first(bad)
        r = int(req[t])
        raise ValueError(f"positions[{t}] = {int(pos[t])} lies outside [0, seq_lens[{r}] = {int(seq[r])}) of its request")
    return pos


def check_step_bounds(inputs) -> None:
    """Every value of a :class:`~sglang_dsv4_sparse.core.plan.StepInputs` the plan reads (types already checked)."""
    if inputs.seq_lens_cpu is not None:
        check_host_copy("seq_lens", inputs.seq_lens, "seq_lens_cpu", inputs.seq_lens_cpu)
    check_host_copy("extend_lens", inputs.extend_lens, "extend_lens_cpu", inputs.extend_lens_cpu)
    seq, ext = inputs.seq_lens.long().cpu(), inputs.extend_lens.long().cpu()
    bad = (ext < 0) | (ext > seq)
    if bool(bad.any()):
        (r,) = _first(bad)
        raise ValueError(f"extend_lens[{r}] = {int(ext[r])} must lie in [0, seq_lens[{r}] = {int(seq[r])}]")
    if seq.numel() == 0:
        return
    pool_rows, max_len = inputs.req_to_token.shape
    check_ids_in_range("req_pool_indices", inputs.req_pool_indices, pool_rows)
    if int(seq.max()) > max_len:
        raise ValueError(f"seq_lens reaches {int(seq.max())}, past req_to_token's {max_len} columns")
    req = torch.repeat_interleave(torch.arange(seq.numel()), ext)
    pos = _positions(inputs, seq, ext, req)
    _check_windows(inputs, req, pos)
    for ratio, table in inputs.compressed_page_tables.items():
        _check_page_table(inputs, ratio, table, seq)


def _check_windows(inputs, req: torch.Tensor, pos: torch.Tensor) -> None:
    """The full ids of every query's window map into ``full_to_swa``, and on into the SWA cache."""
    if pos.numel() == 0:
        return
    cols = torch.arange(inputs.window)
    width = torch.clamp(pos + 1, max=inputs.window)
    window_pos = pos[:, None] - width[:, None] + 1 + cols[None, :]
    read = cols[None, :] < width[:, None]
    # Read columns are in range now that req_pool_indices, seq_lens and
    # positions are checked; the clamp keeps the unread ones in range too.
    device = inputs.req_to_token.device
    pool = inputs.req_pool_indices.long().cpu()[req]
    window_pos = window_pos.clamp(0, inputs.req_to_token.shape[1] - 1)
    full = inputs.req_to_token[pool[:, None].to(device), window_pos.to(device)].long().cpu()[read]
    check_ids_in_range("req_to_token (the full ids the query windows read)", full, inputs.full_to_swa.shape[0])
    swa = inputs.full_to_swa[full.to(inputs.full_to_swa.device)].long().cpu()
    capacity = (inputs.cache_tokens or {}).get(0, 2**62)
    check_ids_in_range(f"full_to_swa (its ids for the query windows; the SWA cache holds {capacity} tokens)", swa,
                       capacity, allow_negative=True)


def _check_page_table(inputs, ratio: int, table: torch.Tensor, seq: torch.Tensor) -> None:
    """The pages each request's compressed rows sit in are columns of its table row and pages of the cache."""
    name = f"compressed_page_tables[{ratio}]"
    page_size = inputs.compressed_page_sizes[ratio]
    pages = -(-(seq // ratio) // page_size)
    if int(pages.max()) > table.shape[1]:
        (r,) = _first(pages == pages.max())
        raise ValueError(f"{name} has {table.shape[1]} pages per request, request {r} needs {int(pages[r])}")
    used = table[:, : int(pages.max())].long().cpu()
    used = torch.where(torch.arange(used.shape[1])[None, :] < pages[:, None], used, 0)
    tokens = (inputs.cache_tokens or {}).get(ratio)
    num_pages = 2**62 if tokens is None else tokens // page_size
    bad = (used < 0) | (used >= num_pages)
    if bool(bad.any()):
        r, c = _first(bad)
        where = "" if tokens is None else f", the compressed cache's {num_pages} pages"
        raise ValueError(f"{name}[{r}, {c}] = {int(used[r, c])} lies outside [0, {num_pages}){where}")


def _cache_tokens(cache: torch.Tensor, page_size: int) -> int:
    """Tokens a cache holds: pages are its first dim, in the 2-D layout and FlashMLA's 4-D view alike."""
    return cache.shape[0] * page_size


def check_prefill_layer_bounds(plan, swa_cache, compress_ratio: int, compressed_cache, topk_indices) -> None:
    """The rows one sparse-prefill layer dequantizes lie in its caches, and its top-k in its requests' rows."""
    swa_tokens = _cache_tokens(swa_cache, plan.swa_page_size)
    check_ids_in_range(f"full_to_swa (its ids for the query windows; swa_cache holds {swa_tokens} tokens)",
                       plan.swa_token_ids, swa_tokens, allow_negative=True)
    if not compress_ratio:
        return
    rows = plan.compressed[compress_ratio]
    tokens = _cache_tokens(compressed_cache, rows.page_size)
    check_ids_in_range(f"compressed_page_tables[{compress_ratio}] (the rows it maps to; compressed_cache holds "
                       f"{tokens} tokens)", rows.token_ids, tokens)
    if compress_ratio == 4:
        _check_topk(topk_indices, plan.query_pos, rows.rows_per_req.long()[plan.req_of_token])


def _check_topk(topk_indices: torch.Tensor, query_pos: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """Entries a query reads are -1 or a row below ``limit`` (per query); returns them (host, -1 elsewhere)."""
    k = topk_indices.shape[1]
    lens = torch.clamp(torch.div(query_pos.long() + 1, 4, rounding_mode="floor"), min=0, max=k).cpu()
    picks = topk_indices.long().cpu()
    picks = torch.where(torch.arange(k)[None, :] < lens[:, None], picks, -1)
    limit = limit.cpu()
    bad = (picks < -1) | (picks >= limit[:, None])
    if bool(bad.any()):
        t, j = _first(bad)
        raise ValueError(
            f"topk_indices[{t}, {j}] = {int(picks[t, j])} must be -1 (a hole) or one of the query's "
            f"{int(limit[t])} compressed rows"
        )
    return picks


def check_decode_layer_bounds(plan, swa_cache, compress_ratio: int, compressed_cache, topk_indices,
                              topk_lengths=None) -> None:
    """The ids one paged layer reads lie in its caches: window ids, C128 ids and a C4 layer's top-k.

    On the paged route a C4 layer's top-k is C4-cache ids already (what SGLang's
    indexer writes), so each counted entry must be -1 or an id in the cache.
    """
    swa_tokens = _cache_tokens(swa_cache, plan.swa_page_size)
    cols = torch.arange(plan.swa_indices.shape[-1], device=plan.swa_lens.device)
    swa = plan.swa_indices[:, 0, :][cols[None, :] < plan.swa_lens.long()[:, None]]
    check_ids_in_range(f"full_to_swa (its ids for the query windows; swa_cache holds {swa_tokens} tokens)",
                       swa, swa_tokens, allow_negative=True)
    if not compress_ratio:
        return
    page_size = plan.compressed_page_sizes[compress_ratio]
    tokens = _cache_tokens(compressed_cache, page_size)
    if compress_ratio == 128:
        name = f"compressed_page_tables[128] (the rows it maps to; compressed_cache holds {tokens} tokens)"
        ids = plan.c128_indices[:, 0, :]
        cols = torch.arange(ids.shape[1], device=ids.device)
        check_ids_in_range(name, ids[cols[None, :] < plan.c128_lens.long()[:, None]], tokens, allow_negative=True)
        return
    cols = torch.arange(topk_indices.shape[1], device=topk_indices.device)
    counted = topk_indices[cols[None, :] < topk_lengths.long()[:, None]]
    check_ids_in_range(f"topk_indices (C4-cache ids; compressed_cache holds {tokens} tokens)", counted, tokens,
                       allow_negative=True)
