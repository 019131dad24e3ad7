"""Churn soak through SGLang's own ForwardBatch: this package's backend and SGLang 0.5.23's, one pool.

    python scripts/soak_sglang.py [--quick | --tiny] [--steps N] [--seed S] [--compare-every K]
                                  [--max-seconds S] [--max-drift-mb MB] [--json FILE] [--dry-run]

One DSv4 deployment (``bench_sglang_ab.Deployment``: SGLang's
``DeepSeekV4TokenToKVPool`` with an SWA, a C4 and a C128 layer, fp8 caches
filled with quantized random rows) serves a random stream of steps, built as
SGLang's scheduler would build them, through ``kit_runner.forward_batch``:

* a request table on the pool: requests arrive (short prompts, and long ones
  of 8k to 128k tokens prefilled in chunks of 8192 / 16384 / 32768 tokens
  over several steps), decode, finish or abort; their full-cache pages come
  from one page allocator (scattered pages, freed pages reused first) and
  finished prompts stay in an LRU prefix cache, so a new request may start
  with a cached prefix (``prefix_len > 0`` at its first extend, the pages
  shared);
* each step is an EXTEND (chunks and new prompts, at most ``step_tokens``
  tokens), a MIXED (the same plus running decodes) or a DECODE (1 to 128
  requests), at 8, 16 or 64 real heads with the query zero-padded to 64 as
  the DSv4 model hands it over, with ``SGLANG_OPT_FLASHMLA_SPARSE_PREFILL``
  on or off at random for extends;
* speculative rounds (MTP as the EAGLE draft, a chain): a DECODE turns, now
  and then, into a TARGET_VERIFY of ``draft_tokens`` tokens a request (each
  request then accepts 1 to ``draft_tokens`` of them), then the DRAFT_EXTEND
  (window-only MTP layer) of ``draft_tokens`` rows a request ending at its
  new length, as the kit's draft-extend cases lay it out; both on backends
  built with MTP on;
* both backends run every step on the same inputs: ``init_forward_metadata``,
  the C4 top-k written where SGLang's indexer writes it (random distinct
  request-local picks), then one layer of each kind (eager: decode CUDA
  graphs are not replayed here; ``bench_sglang_ab.py`` and the kit matrix do
  that).

Checked: our output is finite on the real heads every step; every
``--compare-every``-th step it is compared with SGLang's on the real heads
with the kit's tolerance (``DSV4_ATOL`` / ``DSV4_RTOL``, as ``tests/sglang``
compares kit cases); ``torch.cuda.max_memory_allocated()`` (the running
peak, never reset) is read after a warm-up of envelope steps (the largest
shapes the stream can produce, each head count, sparse prefill on and off)
and every ``--memory-every`` steps, and must not grow past ``--max-drift-mb``
(default 1 MB, allocator rounding). Counted: each reason our backend hands
work to SGLang (its ``_note_fallback``, wrapped on the instance), steps
whose plan is None after ``init_forward_metadata``, the plan's route (and
per-layer ``routes`` where the plan has them).

``--tiny`` is a CPU plumbing check (Triton interpreter, tiny shapes): only
our backend runs (SGLang's needs FlashMLA) and compare steps use the
package's dense fp32 reference (``reference.layer_attention_reference``,
built from the soak's own request table) instead; memory is "n/a".
``--quick`` is the short GPU run of ``scripts/gpu_sglang_check.sh`` (300
steps, prompts up to 32k). ``--dry-run`` only schedules the steps and prints
what they cover (no backend runs, no GPU needed).

Writes a JSON report to ``--json`` (default ``$OUT/soak_sglang.json``,
``./gpu_check_out/`` when ``OUT`` is unset) and prints a summary block
starting ``== soak_sglang``. Exit status: 0 ok; 1 a mismatch, a non-finite
output, memory drift over ``--max-drift-mb`` or a step that raised; 2 bad
usage; 4 (``benchmarking.EXIT_NO_GPU``, every script's no-GPU status)
without a CUDA GPU (and without ``--tiny`` / ``--dry-run``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXIT_FAILED = 1
EXIT_USAGE = 2  # argparse's
EXIT_NO_GPU = 4  # benchmarking.EXIT_NO_GPU, repeated so that --help and --dry-run import neither torch nor the package


PAGE = 256  # SGLang's full-cache page (bench_sglang_ab.PAGE; repeated so --dry-run imports no SGLang)
# The speculative steps, by the names ForwardMode gives them (DRAFT_EXTEND runs as DRAFT_EXTEND_V2).
SPEC_MODES = ("TARGET_VERIFY", "DRAFT_EXTEND")
KEEP_EXAMPLES = 5  # mismatches, non-finite outputs and errors kept with their step
MAX_ERRORS = 20  # steps that raised before the soak stops
# Reported, not failed on: compared layers whose relative norm error passes this bound, the one
# tests/helpers/testing.assert_attention_close applies beside its element bound (the kit's
# tolerance alone is loose for attention outputs this small).
REL_NORM_BOUND = 1e-2


@dataclass(frozen=True)
class Profile:
    """The shape of one soak: what arrives, how big a step gets, how the deployment is sized."""

    steps: int
    max_context: int  # most tokens a request holds (whole pages); a prefix hit shortens what it adds
    heads: tuple  # real heads, one drawn per step
    chunk_sizes: tuple  # a long prompt's chunk size, drawn at its arrival
    step_tokens: int  # most extend tokens in one step (SGLang's chunked_prefill_size)
    long_prompt: tuple  # (min, max) tokens of a long prompt
    short_prompt: tuple
    long_gen: tuple  # (min, max) tokens decoded after the prompt
    short_gen: tuple
    max_decode_bs: int  # a DECODE step's most requests
    max_mixed_decodes: int  # a MIXED step's most decode rows
    max_extend_reqs: int  # an extend's most prefilling requests
    max_long_prefilling: int  # long prompts being prefilled at once
    rows: int  # req_to_token rows: most live requests
    pool_tokens: int  # full-cache tokens of the deployment
    cache_entries: int  # prefix-cache entries kept (LRU)
    arrival_burst: int  # most short requests arriving in one step
    system_prompt: int  # tokens in the prefix cache at the start (a shared system prompt)
    p_long: float  # chance a step brings a long prompt (while fewer than max_long_prefilling are being prefilled)
    p_sparse: float  # chance an extend runs with SGLANG_OPT_FLASHMLA_SPARSE_PREFILL on
    progress_every: int
    # Speculative (MTP / EAGLE, chain) rounds: a DECODE turns, with chance p_spec, into a TARGET_VERIFY of
    # draft_tokens tokens a request, then its DRAFT_EXTEND (window-only MTP layer, draft_tokens rows a request).
    draft_tokens: int = 0  # 0: no speculative steps
    p_spec: float = 0.0

    def __post_init__(self):
        # A verify step's draft tokens may run past the request's last token.
        longest = max(self.long_prompt[1] + self.long_gen[1], self.short_prompt[1] + self.short_gen[1])
        longest += self.draft_tokens
        if longest > self.max_context or self.max_context % PAGE:
            raise ValueError(f"max_context {self.max_context} must be whole pages and hold {longest} tokens")


PROFILES = {
    "full": Profile(
        steps=2000, max_context=131072 + PAGE, heads=(8, 16, 64), chunk_sizes=(8192, 16384, 32768), step_tokens=32768,
        long_prompt=(8192, 131072), short_prompt=(16, 4096), long_gen=(1, 32), short_gen=(1, 48),
        max_decode_bs=128, max_mixed_decodes=32, max_extend_reqs=8, max_long_prefilling=2, rows=192,
        pool_tokens=4 << 20, cache_entries=64, arrival_burst=16, system_prompt=8192, p_long=0.1, p_sparse=0.5,
        progress_every=100, draft_tokens=4, p_spec=0.3,
    ),
    "quick": Profile(
        steps=300, max_context=32768 + PAGE, heads=(8, 16, 64), chunk_sizes=(8192, 16384), step_tokens=16384,
        long_prompt=(8192, 32768), short_prompt=(16, 4096), long_gen=(1, 32), short_gen=(1, 48),
        max_decode_bs=128, max_mixed_decodes=32, max_extend_reqs=8, max_long_prefilling=2, rows=192,
        pool_tokens=2 << 20, cache_entries=64, arrival_burst=24, system_prompt=4096, p_long=0.1, p_sparse=0.5,
        progress_every=50, draft_tokens=4, p_spec=0.3,
    ),
    # CPU (Triton interpreter: a paged-route query row costs about 2 s a step, so sparse prefill comes more
    # often): a handful of steps of a few tokens; a "long" prompt takes several chunks of 4 or 8, hits extend
    # the 256-token system prompt.
    "tiny": Profile(
        steps=8, max_context=2 * PAGE, heads=(16,), chunk_sizes=(4, 8), step_tokens=8,
        long_prompt=(12, 24), short_prompt=(1, 4), long_gen=(1, 3), short_gen=(1, 3),
        max_decode_bs=3, max_mixed_decodes=1, max_extend_reqs=2, max_long_prefilling=1, rows=6,
        pool_tokens=32 * PAGE, cache_entries=4, arrival_burst=2, system_prompt=PAGE, p_long=0.5, p_sparse=0.75,
        progress_every=1, draft_tokens=2, p_spec=0.5,
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 ok; 1 mismatch, non-finite output, memory drift or a step error; "
               f"{EXIT_USAGE} bad usage; {EXIT_NO_GPU} no CUDA GPU visible (without --tiny / --dry-run).",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short GPU run: 300 steps, prompts up to 32k")
    size.add_argument("--tiny", action="store_true", help="CPU plumbing check: tiny shapes, our backend only")
    p.add_argument("--steps", type=int, default=None, help="random steps after warm-up (default: 2000; --quick 300; --tiny 8)")
    p.add_argument("--seed", type=int, default=0, help="seeds the schedule and every random tensor (default 0)")
    p.add_argument("--compare-every", type=int, default=20, help="compare with the oracle every K-th step (default 20)")
    p.add_argument("--max-seconds", type=float, default=540.0,
                   help="stop after this many seconds from start, whatever --steps says (default 540)")
    p.add_argument("--max-drift-mb", type=float, default=1.0,
                   help="largest growth of torch.cuda.max_memory_allocated() after warm-up, in MB (default 1.0: "
                        "none beyond allocator rounding)")
    p.add_argument("--memory-every", type=int, default=500, help="read the peak memory every N steps (default 500)")
    p.add_argument("--progress-every", type=int, default=None, help="print a progress line every N steps")
    p.add_argument("--oracle", choices=("sglang", "reference"), default=None,
                   help="what compare steps check ours against (default: sglang on CUDA, reference on CPU)")
    p.add_argument("--json", default=None, help="report path (default: $OUT/soak_sglang.json, ./gpu_check_out/ without OUT)")
    p.add_argument("--dry-run", action="store_true", help="schedule the steps and print their coverage; run nothing")
    p.add_argument("--from-json", default=None, help="print an earlier run's summary from its report and exit")
    p.add_argument("--markdown", action="store_true", help="with --from-json: as a Markdown block with its run line")
    args = p.parse_args(argv)
    profile = PROFILES["tiny" if args.tiny else "quick" if args.quick else "full"]
    args.profile_name = "tiny" if args.tiny else "quick" if args.quick else "full"
    args.profile = profile
    args.steps = profile.steps if args.steps is None else args.steps
    args.progress_every = args.progress_every or profile.progress_every
    for name in ("steps", "compare_every", "memory_every", "progress_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# ---------------------------------------------------------------------------
# The request table: rows, pages, prefix cache
# ---------------------------------------------------------------------------


@dataclass
class Request:
    rid: int
    row: int  # req_to_token row
    pages: list  # full-cache pages covering ``target`` tokens and the table's spare tokens
    seq: int  # tokens in the cache
    prompt: int
    target: int  # prompt + generated tokens: the request finishes there
    chunk: int  # most tokens of its prompt one step takes
    hit: int  # prefix-cache hit at arrival (tokens)
    long: bool
    extends: int = 0  # steps that extended its prompt

    @property
    def prefilling(self) -> bool:
        return self.seq < self.prompt


class Table:
    """Live requests on one pool, as SGLang's scheduler and radix cache keep them.

    ``req_to_token`` rows are written when a request is admitted (its pages
    for every token it will hold); pages are reference-counted, since a
    prefix-cache hit shares the cached request's pages; an entry of the
    prefix cache holds the page-aligned prefix of a finished request.
    """

    def __init__(self, req_to_token, num_pages: int, rows: int, cache_entries: int, rng: random.Random,
                 spare_tokens: int = 0):
        import torch

        self.req_to_token = req_to_token
        # Pages past a request's last token for a verify step's draft tokens (within its req_to_token row).
        self.spare_tokens = spare_tokens
        self.free_rows = list(range(rows))
        pages = list(range(1, num_pages))  # page 0 stays unused, as in SGLang
        rng.shuffle(pages)
        self.free_pages = pages
        self.refs = [0] * num_pages
        self.cache: "collections.OrderedDict[int, tuple]" = collections.OrderedDict()
        self.cache_entries = cache_entries
        self.live: List[Request] = []
        self._next_id = 0
        self._offsets = torch.arange(PAGE, dtype=torch.int64)

    def _take(self, n: int) -> Optional[list]:
        while len(self.free_pages) < n and self.cache:
            self._evict()
        if len(self.free_pages) < n:
            return None
        return [self.free_pages.pop() for _ in range(n)]

    def _evict(self) -> None:
        _, pages = self.cache.popitem(last=False)
        self._drop(pages)

    def _drop(self, pages) -> None:
        for page in pages:
            self.refs[page] -= 1
            if self.refs[page] == 0:
                self.free_pages.append(page)

    def admit(self, *, prompt: int, target: int, chunk: int, long: bool, hit_pages: tuple = ()) -> Optional[Request]:
        """A new request whose first ``len(hit_pages)`` pages are cached already, or None when full."""
        import torch

        if not self.free_rows:
            return None
        for page in hit_pages:  # held before anything is evicted to make room
            self.refs[page] += 1
        tokens = min(target + self.spare_tokens, self.req_to_token.shape[1])
        own = self._take(-(-tokens // PAGE) - len(hit_pages))
        if own is None:
            self._drop(hit_pages)
            return None
        for page in own:
            self.refs[page] += 1
        pages = list(hit_pages) + own
        row = self.free_rows.pop()
        ids = (torch.tensor(pages, dtype=torch.int64)[:, None] * PAGE + self._offsets).flatten()
        self.req_to_token[row, : ids.numel()] = ids.to(self.req_to_token.device, self.req_to_token.dtype)
        hit = len(hit_pages) * PAGE
        req = Request(self._next_id, row, pages, hit, prompt, target, chunk, hit, long)
        self._next_id += 1
        self.live.append(req)
        return req

    def release(self, req: Request, *, cache_prefix: bool) -> None:
        """``req`` leaves the table; with ``cache_prefix`` its page-aligned tokens stay in the prefix cache."""
        self.live.remove(req)
        kept = tuple(req.pages[: req.seq // PAGE])
        if cache_prefix and kept:
            for page in kept:
                self.refs[page] += 1
            self.cache[req.rid] = kept
            while len(self.cache) > self.cache_entries:
                self._evict()
        self._drop(req.pages)
        self.free_rows.append(req.row)

    def seed_cache(self, tokens: int) -> None:
        """A prefix-cache entry of ``tokens`` cached tokens (page-aligned) no request owns yet."""
        pages = self._take(tokens // PAGE)
        if pages:
            for page in pages:
                self.refs[page] += 1
            self.cache[-1] = tuple(pages)

    def pin(self, tokens: int) -> tuple:
        """Pages of ``tokens`` cached tokens no request owns (the warm-up's shared prefix); never evicted."""
        pages = self._take(-(-tokens // PAGE))
        if pages is None:
            raise RuntimeError("the pool cannot hold the warm-up's prefix")
        for page in pages:
            self.refs[page] += 1
        return tuple(pages)

    def unpin(self, pages: tuple) -> None:
        self._drop(pages)

    def hit_candidates(self) -> list:
        return list(self.cache.items())

    def touch(self, key: int) -> None:
        self.cache.move_to_end(key)


# ---------------------------------------------------------------------------
# The schedule
# ---------------------------------------------------------------------------


@dataclass
class Step:
    index: int  # -1 for warm-up steps
    mode: str  # EXTEND, MIXED, DECODE, TARGET_VERIFY or DRAFT_EXTEND
    heads: int
    sparse: Optional[bool]  # SGLANG_OPT_FLASHMLA_SPARSE_PREFILL (extends); None for decodes and speculative steps
    reqs: list  # Request, in batch order (prefilling ones first)
    ext: list  # query rows of each
    label: str = ""
    prefix: list = field(default_factory=list)  # cached tokens of each when the step was drawn

    def __post_init__(self):
        self.prefix = [r.seq for r in self.reqs]

    @property
    def num_tokens(self) -> int:
        return sum(self.ext)

    def describe(self) -> str:
        lens = list(zip(self.prefix, self.ext))
        shown = ", ".join(f"{p}+{e}" for p, e in lens[:6]) + (f", ... ({len(lens)} reqs)" if len(lens) > 6 else "")
        sparse = "" if self.sparse is None else f" sparse_prefill={'on' if self.sparse else 'off'}"
        tag = f" {self.label}" if self.label else ""
        return f"step {self.index}{tag}: {self.mode} heads={self.heads}{sparse} tokens={self.num_tokens} [prefix+ext: {shown}]"


class Scheduler:
    """Draws each step: arrivals, aborts, then an EXTEND / MIXED / DECODE batch from the table."""

    P_ARRIVE = 0.45  # a burst of short requests arrives
    P_HIT = 0.35  # a new request starts from a cached prefix
    P_ABORT = 0.02  # a live request is aborted (mid-prefill included)
    P_CACHE = 0.6  # a finished request's prefix stays in the prefix cache
    MODE_WEIGHTS = {"EXTEND": 0.3, "MIXED": 0.25, "DECODE": 0.45}

    def __init__(self, profile: Profile, table: Table, rng: random.Random):
        self.p = profile
        self.table = table
        table.seed_cache(profile.system_prompt)
        self.rng = rng
        self.stats = collections.Counter()
        self.decode_bs = collections.Counter()  # bucket -> steps
        self.verify_bs = collections.Counter()
        self.pending_draft: Optional[Step] = None  # the draft extend that follows the last verify step
        self.max_live = 0
        self.max_seq = 0
        self.max_tokens = 0

    # ---- arrivals ------------------------------------------------------------

    def _arrive(self, long: bool) -> None:
        p, rng = self.p, self.rng
        gen = rng.randint(*(p.long_gen if long else p.short_gen))
        new = rng.randint(*(p.long_prompt if long else p.short_prompt))
        hit_pages, key = (), None
        candidates = self.table.hit_candidates()
        if candidates and rng.random() < self.P_HIT:
            key, pages = rng.choice(candidates)
            # A hit is page-aligned and leaves at least one prompt token to compute.
            room = p.max_context - gen - 1
            hit_len = min(len(pages) * PAGE, room) // PAGE * PAGE
            if hit_len > 0:
                hit_pages = pages[: hit_len // PAGE]
                new = max(1, min(new, p.max_context - gen - hit_len))
        prompt = len(hit_pages) * PAGE + new
        chunk = rng.choice(p.chunk_sizes) if long else p.step_tokens
        req = self.table.admit(prompt=prompt, target=prompt + gen, chunk=chunk, long=long, hit_pages=hit_pages)
        if req is None:
            self.stats["rejected (pool full)"] += 1
            return
        self.stats["arrived"] += 1
        self.stats[f"arrived long (chunks of {chunk})" if long else "arrived short"] += 1
        if hit_pages:
            self.table.touch(key)
            self.stats["prefix-cache hits"] += 1

    def _churn(self) -> None:
        p, rng, table = self.p, self.rng, self.table
        if rng.random() < p.p_long and sum(r.long and r.prefilling for r in table.live) < p.max_long_prefilling:
            self._arrive(long=True)
        if rng.random() < self.P_ARRIVE or not table.live:
            for _ in range(rng.randint(1, p.arrival_burst)):
                # Rows for long prompts stay free: short ones fill the table up to the rest.
                if len(table.live) >= p.rows - p.max_long_prefilling:
                    self.stats["rejected (table full)"] += 1
                    break
                self._arrive(long=False)
        if table.live and rng.random() < self.P_ABORT:
            # Half the aborts hit a prompt mid-prefill when there is one (its chunks stop half-way).
            prefilling = [r for r in table.live if r.prefilling]
            victim = rng.choice(prefilling if prefilling and rng.random() < 0.5 else table.live)
            self.stats["aborted mid-prefill" if victim.prefilling else "aborted decoding"] += 1
            table.release(victim, cache_prefix=False)

    # ---- batches -------------------------------------------------------------

    def next_step(self, index: int) -> Optional[Step]:
        if self.pending_draft is not None:
            # SGLang runs the draft model's extend right after its verify, in the same scheduler round.
            step, self.pending_draft = self.pending_draft, None
            step.index = index
            return step
        self._churn()
        rng, p = self.rng, self.p
        prefilling = [r for r in self.table.live if r.prefilling]
        decoding = [r for r in self.table.live if not r.prefilling]
        self.max_live = max(self.max_live, len(self.table.live))
        modes = [m for m in self.MODE_WEIGHTS if (m != "DECODE" and prefilling) or (m != "EXTEND" and decoding)]
        if "MIXED" in modes and not (prefilling and decoding):
            modes.remove("MIXED")
        if not modes:
            return None
        mode = rng.choices(modes, weights=[self.MODE_WEIGHTS[m] for m in modes])[0]
        reqs, ext = [], []
        if mode != "DECODE":
            budget = p.step_tokens
            for req in prefilling:  # first come, first served, as SGLang's scheduler takes them
                if budget == 0 or len(reqs) == p.max_extend_reqs:
                    break
                take = min(req.chunk, req.prompt - req.seq, budget)
                reqs.append(req)
                ext.append(take)
                budget -= take
        if mode != "EXTEND":
            cap = min(p.max_decode_bs if mode == "DECODE" else p.max_mixed_decodes, len(decoding))
            # Log-uniform over 1..cap, and the whole cap now and then: small and full batches both come.
            bs = cap if rng.random() < 0.1 else min(cap, max(1, int(math.exp(rng.uniform(0, math.log(cap + 1))))))
            picked = rng.sample(decoding, bs)
            reqs += picked
            ext += [1] * bs
        if mode == "DECODE" and p.draft_tokens and rng.random() < p.p_spec:
            # A speculative round instead: every picked request with room for the draft tokens, and with
            # as many tokens after it as its draft extend's rows.
            room = [r for r in reqs if r.seq + p.draft_tokens <= len(r.pages) * PAGE and r.seq + 1 >= p.draft_tokens]
            if room:
                mode, reqs, ext = "TARGET_VERIFY", room, [p.draft_tokens] * len(room)
                self.verify_bs[_bucket(len(room))] += 1
        if mode == "DECODE":
            self.decode_bs[_bucket(len(reqs))] += 1
        heads = rng.choice(p.heads)
        sparse = rng.random() < p.p_sparse if mode in ("EXTEND", "MIXED") else None
        return Step(index, mode, heads, sparse, reqs, ext)

    def advance(self, step: Step) -> None:
        """After the step: lengths grow, finished prompts start decoding, finished requests leave."""
        self.stats[f"steps {step.mode}"] += 1
        if step.sparse is not None:
            self.stats[f"extends with sparse prefill {'on' if step.sparse else 'off'}"] += 1
        self.max_tokens = max(self.max_tokens, step.num_tokens)
        if step.mode == "TARGET_VERIFY":
            # Each request keeps the draft tokens that matched plus the bonus token: 1..S. The draft extend
            # that follows has SGLang's static layout, S rows a request, here its last S positions (as the
            # kit's draft-extend cases lay them out: SGLang hands other row counts to its own attention).
            drafts = step.ext[0]
            for req in step.reqs:
                self.max_seq = max(self.max_seq, req.seq + drafts)
                accepted = self.rng.randint(1, drafts)
                self.stats[f"verified requests accepting {accepted} of {drafts}"] += 1
                req.seq += accepted
            draft = Step(-1, "DRAFT_EXTEND", step.heads, None, list(step.reqs), [drafts] * len(step.reqs))
            draft.prefix = [r.seq - drafts for r in step.reqs]
            self.pending_draft = draft
            return
        if step.mode == "DRAFT_EXTEND":  # it recomputes the tokens its verify step added
            for req in step.reqs:
                self._finish_if_done(req)
            return
        for req, e in zip(step.reqs, step.ext):
            self.max_seq = max(self.max_seq, req.seq + e)
            if req.prefilling:
                if req.extends == 0 and req.hit:
                    self.stats["first extends after a prefix hit"] += 1
                req.extends += 1
                if req.long:
                    self.stats["long-prompt chunks"] += 1
                req.seq += e
                if not req.prefilling and req.long:
                    self.stats["long prompts prefilled"] += 1
                    self.stats[f"long prompts prefilled in {_bucket(req.extends)} chunks"] += 1
            else:
                req.seq += e
            self._finish_if_done(req)

    def _finish_if_done(self, req: Request) -> None:
        if req.seq >= req.target:
            self.stats["finished"] += 1
            self.table.release(req, cache_prefix=self.rng.random() < self.P_CACHE)

    def coverage(self) -> dict:
        return dict(stats=dict(sorted(self.stats.items())),
                    decode_batch_sizes={k: self.decode_bs[k] for k in sorted(self.decode_bs, key=_bucket_key)},
                    verify_batch_sizes={k: self.verify_bs[k] for k in sorted(self.verify_bs, key=_bucket_key)},
                    max_live_requests=self.max_live, max_seq_len=self.max_seq, max_step_tokens=self.max_tokens)


def _bucket(n: int) -> str:
    for lo, hi in ((1, 1), (2, 7), (8, 31), (32, 63), (64, 127)):
        if lo <= n <= hi:
            return str(lo) if lo == hi else f"{lo}-{hi}"
    return str(n) if n == 128 else f"{n // 64 * 64}+"


def _bucket_key(b: str) -> int:
    return int(b.split("-")[0].rstrip("+"))


def envelope_steps(profile: Profile) -> list:
    """The warm-up: the largest shapes the schedule can produce, at each head count, sparse prefill on and off.

    Every extend the schedule draws has at most ``step_tokens`` extend tokens, at
    most ``max_extend_reqs`` prefilling requests and ``max_mixed_decodes`` decode
    rows, every request at most ``max_context`` tokens; a DECODE at most
    ``max_decode_bs`` requests, and so a speculative round (``draft_tokens`` a
    request). Here every request sits at ``max_context`` (all
    sharing one pinned prefix, as prefix-cache hits do), so after these steps
    the peak memory of a step of the stream is reached already. Returns
    ``(label, mode, [(prefix, ext)] of extend requests, decode rows)``.
    """
    p = profile
    ctx = p.max_context
    one = min(p.step_tokens, ctx - 1)
    n = min(p.max_extend_reqs, p.step_tokens)
    # step_tokens split over n prompts, each ending at max_context.
    many = [(ctx - e, e) for e in (p.step_tokens // n + (i < p.step_tokens % n) for i in range(n))]
    shapes = [
        ("envelope: one chunk", "EXTEND", [(ctx - one, one)], 0),
        ("envelope: many prompts", "EXTEND", many, 0),
        ("envelope: mixed", "MIXED", many, p.max_mixed_decodes),
        ("envelope: decode", "DECODE", [], p.max_decode_bs),
    ]
    if p.draft_tokens:
        shapes += [("envelope: verify", "TARGET_VERIFY", [], p.max_decode_bs),
                   ("envelope: draft extend", "DRAFT_EXTEND", [], p.max_decode_bs)]
    return shapes


def build_envelope(profile: Profile, table: Table, pinned: tuple, shape) -> tuple:
    """The requests of one envelope step (each shares the pinned prefix) and its Step (index -1)."""
    label, mode, extends, decodes = shape
    ctx = profile.max_context
    per_req = profile.draft_tokens if mode in SPEC_MODES else 1  # query rows of a decoding request
    reqs, ext = [], []
    for prefix, e in extends + [(ctx - per_req, per_req)] * decodes:
        req = table.admit(prompt=prefix + e, target=prefix + e, chunk=e, long=False, hit_pages=pinned[: prefix // PAGE])
        if req is None:
            raise RuntimeError(f"{label}: the pool or the table cannot hold the warm-up step")
        req.seq = prefix  # past the shared pages too: their content is the pool's random rows all the same
        reqs.append(req)
        ext.append(e)
    return reqs, Step(-1, mode, 0, None, reqs, ext, label=label)


# ---------------------------------------------------------------------------
# Running a step on the backends
# ---------------------------------------------------------------------------


class Soak:
    def __init__(self, args, device: str, oracle: str):
        import torch

        import bench_sglang_ab as ab
        import kit_runner

        self.torch = torch
        self.ab = ab
        self.kr = kit_runner
        self.args = args
        self.p = args.profile
        self.device = device
        self.oracle = oracle  # "sglang" or "reference"
        t = time.time()
        self.dep = ab.Deployment(max_reqs=self.p.rows, max_context=self.p.max_context,
                                 full_tokens=self.p.pool_tokens, device=device)
        self.build_s = time.time() - t
        self.req_to_token = self.dep.runner.req_to_token_pool.req_to_token
        self.names = ("sglang", "ours") if device == "cuda" else ("ours",)
        self.backends = {name: kit_runner.BACKENDS[name](self.dep.runner) for name in self.names}
        # The speculative steps run on backends built with MTP on (its draft-token count), as a server
        # with --speculative-algorithm builds them; the other steps on the plain ones.
        self.spec_backends = {}
        if self.p.draft_tokens:
            from bench_sglang_verify import speculative_settings

            with speculative_settings(self.p.draft_tokens):
                self.spec_backends = {name: kit_runner.BACKENDS[name](self.dep.runner) for name in self.names}
        self.fallbacks = collections.Counter()
        self._step_fallbacks = 0
        for backends in (self.backends, self.spec_backends):
            if backends:
                self._count_fallbacks(backends["ours"])
        self.gen = torch.Generator(device=device).manual_seed(args.seed)
        self.layers = {}
        self.plan_routes = collections.Counter()
        self.layer_routes = collections.Counter()
        self.handed_to_sglang = 0
        self.steps_with_fallback = 0
        self.worst = None  # the largest worst_error of any compared layer
        self.max_abs = 0.0
        self.rel = 0.0

    def _count_fallbacks(self, ours) -> None:
        original = ours._note_fallback

        def counting(reason, _original=original):
            # Instance attribute over the class's method: every call, not only the first one logged.
            self.fallbacks[str(reason)] += 1
            self._step_fallbacks += 1
            return _original(reason)

        ours._note_fallback = counting

    def layer(self, layer_id: int, heads: int):
        key = (layer_id, heads)
        if key not in self.layers:
            self.layers[key] = self.dep.layer(layer_id, heads)
        return self.layers[key]

    def c4_picks(self, rows_of_token, pos):
        """What the C4 indexer writes: distinct random request-local rows below ``(pos + 1) // 4`` (at most
        TOPK, -1 past them), and the same as C4-cache ids through the request's pages."""
        torch, dev, topk = self.torch, self.device, self.ab.TOPK
        avail = torch.div(pos + 1, 4, rounding_mode="floor")
        lens = avail.clamp(max=topk)
        cols = torch.arange(topk, device=dev)
        # Sorted draws from [0, avail - lens] plus 0..topk-1: distinct rows below avail in the first lens
        # columns; then shuffled there (the indexer's order is by score).
        span = (avail - lens + 1).clamp_min(1)
        draws = (torch.rand(pos.numel(), topk, generator=self.gen, device=dev) * span[:, None]).long()
        draws = draws.sort(dim=1).values + cols
        valid = cols[None, :] < lens[:, None]
        keys = torch.where(valid, torch.rand(pos.numel(), topk, generator=self.gen, device=dev), 2.0 + cols.float())
        local = torch.where(valid, draws.gather(1, keys.argsort(dim=1)), -1)
        per_page = PAGE // 4
        first_token = (local.clamp_min(0) // per_page) * PAGE  # the first token of the full page holding the row
        page = self.req_to_token[rows_of_token[:, None], first_token].long() // PAGE
        ids = torch.where(local >= 0, page * per_page + local.clamp_min(0) % per_page, -1)
        return local.to(torch.int32), ids.to(torch.int32)

    def run(self, step: Step, compare: bool) -> dict:
        """Both backends on ``step``; returns what was seen (non-finite layers, errors against the oracle)."""
        torch, dev = self.torch, self.device
        from sglang.srt.environ import envs
        from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

        rows, prefix, ext, heads = [r.row for r in step.reqs], step.prefix, step.ext, step.heads
        pos = torch.cat([torch.arange(s, s + e, device=dev) for s, e in zip(prefix, ext)])
        rows_of_token = torch.repeat_interleave(torch.tensor(rows, device=dev), torch.tensor(ext, device=dev))
        locs = self.req_to_token[rows_of_token, pos].long()
        spec = step.mode in SPEC_MODES
        backends = self.spec_backends if spec else self.backends
        ours = backends["ours"]
        ratios = (0,) if step.mode == "DRAFT_EXTEND" else self.ab.RATIOS  # the MTP layer is window-only
        fb = self.kr.forward_batch(self.dep.runner, "EXTEND" if spec else step.mode, rows, prefix, ext, locs, dev)
        if spec:
            self._make_speculative(fb, step)
        raw, ids = self.c4_picks(rows_of_token, pos)
        q, sink = self.ab._query(step.num_tokens, heads, self.gen, dev)
        flag = (envs.SGLANG_OPT_FLASHMLA_SPARSE_PREFILL.override(step.sparse) if step.sparse is not None
                else contextlib.nullcontext())
        seen = dict(nonfinite=[], worst=None, max_abs=0.0, rel=0.0, rel_over=0, mismatch=[])
        self._step_fallbacks = 0
        try:
            with torch.no_grad(), flag:
                for backend in backends.values():
                    with forward_context(ForwardContext(attn_backend=backend)):
                        backend.init_forward_metadata(fb)
                        if 4 in ratios:
                            self.ab._write_c4(backend, raw, ids)  # where SGLang's indexer writes its top-k
                plan = getattr(ours, "_dsv4_step", None)
                if plan is None:
                    self.handed_to_sglang += 1
                else:
                    self.plan_routes[self.kr.our_route(plan)] += 1  # "verify": the verify kernel's grouping
                reference = self._reference_inputs(step, pos) if compare and self.oracle == "reference" else None
                for layer_id, ratio in enumerate(ratios):
                    layer = self.layer(layer_id, heads)
                    outs = {}
                    for name, backend in backends.items():
                        with forward_context(ForwardContext(attn_backend=backend)):
                            outs[name] = backend.forward(q=q, k=q, v=q, layer=layer, forward_batch=fb,
                                                         compress_ratio=ratio, save_kv_cache=False, attn_sink=sink)
                    mine = outs["ours"][:, :heads]
                    if not bool(torch.isfinite(mine).all()):
                        seen["nonfinite"].append(ratio)
                    if compare:
                        if reference is not None:
                            expected = self._reference(reference, q[:, :heads], layer_id, ratio, raw, sink[:heads])
                        else:
                            expected = outs["sglang"][:, :heads]
                        self._compare(seen, ratio, mine, expected)
                    del outs, mine
                if plan is not None:
                    self._count_layer_routes(plan)
        finally:
            if self._step_fallbacks:
                self.steps_with_fallback += 1
        return seen

    def _make_speculative(self, fb, step: Step) -> None:
        """Make an extend batch of ``step``'s rows the speculative batch SGLang's EAGLE worker hands over:
        a chain verify (``seq_lens`` the committed tokens), or a draft extend (``seq_lens`` counting its rows)."""
        from types import SimpleNamespace

        from sglang.srt.model_executor.forward_batch_info import ForwardMode

        # What the kit's helpers read of a case: one draft (or accepted) count a batch, and the prefixes.
        case = SimpleNamespace(batch_size=len(step.reqs), prefix_lens=list(step.prefix), input_lens=list(step.ext))
        if step.mode == "TARGET_VERIFY":
            fb.forward_mode = ForwardMode.TARGET_VERIFY
            self.kr.prepare_verify_batch(case, fb, self.device)
        else:
            fb.forward_mode = ForwardMode.DRAFT_EXTEND_V2
            self.kr.prepare_draft_extend_batch(case, fb, self.device)

    def _compare(self, seen: dict, ratio: int, mine, expected) -> None:
        worst, max_abs, rel = self._worst(mine, expected)
        if worst != worst:  # NaN: out of tolerance by any measure
            worst = float("inf")
        seen["worst"] = worst if seen["worst"] is None else max(seen["worst"], worst)
        if max_abs == max_abs:
            seen["max_abs"] = max(seen["max_abs"], max_abs)
            seen["rel"] = max(seen["rel"], rel)
        seen["rel_over"] += not rel <= REL_NORM_BOUND
        if worst > 1.0:
            seen["mismatch"].append((ratio, worst))

    def _worst(self, actual, expected, rows: int = 2048) -> tuple:
        """``(kit_runner.worst_error, largest |difference|, relative norm error)``, a block of rows at a time.

        The first is at most 1 within the kit's tolerance (below 0 inside its relative part alone); the
        last, ``|a - e| / |e|`` over the layer, is reported beside it (the kit's tolerance is loose for
        outputs this small)."""
        worst, max_abs, diff2, ref2 = -float("inf"), 0.0, 0.0, 0.0
        for a in range(0, actual.shape[0], rows):
            x, y = actual[a:a + rows].float(), expected[a:a + rows].float()
            w = self.kr.worst_error(x, y)
            if w != w:
                return w, float("nan"), float("nan")
            worst, max_abs = max(worst, w), max(max_abs, float((x - y).abs().max()))
            diff2 += float((x - y).square().sum())
            ref2 += float(y.square().sum())
        return worst, max_abs, math.sqrt(diff2 / max(ref2, 1e-30))

    def _count_layer_routes(self, plan) -> None:
        """Per-layer routes where the step keeps them (a route may hand a layer kind to SGLang on purpose):
        ``routes_by_heads`` ({(heads, query width): {ratio: route}}) or ``routes``; neither is required."""
        by_heads = getattr(plan, "routes_by_heads", None)
        if isinstance(by_heads, dict):
            for routes in by_heads.values():
                if isinstance(routes, dict):
                    self.layer_routes.update(f"c{ratio} {route}" for ratio, route in routes.items())
            return
        routes = getattr(plan, "routes", None)
        if isinstance(routes, dict):
            self.layer_routes.update(f"c{ratio} {route}" for ratio, route in routes.items())
        elif isinstance(routes, (list, tuple)):
            self.layer_routes.update(str(route) for route in routes)

    def _reference(self, inputs, q, layer_id: int, ratio: int, raw, sink):
        from sglang_dsv4_sparse.reference import layer_attention_reference

        pool = self.dep.runner.token_to_kv_pool
        return layer_attention_reference(inputs, q, pool.get_swa_key_buffer_radix(layer_id), ratio,
                                         pool.get_extra_key_buffer(layer_id) if ratio else None,
                                         raw if ratio == 4 else None, sink)

    def _reference_inputs(self, step: Step, pos):
        """The step as the package's dense reference reads it, from the soak's own table (not from a plan)."""
        torch, dev = self.torch, self.device
        from sglang_dsv4_sparse import layout as L
        from sglang_dsv4_sparse.core.plan import StepInputs

        pool = self.dep.runner.token_to_kv_pool
        rows = torch.tensor([r.row for r in step.reqs], device=dev)
        seq = [p + e for p, e in zip(step.prefix, step.ext)]
        # A request's compressed rows live in the compressed pages numbered as its full pages.
        table = self.req_to_token[rows][:, ::PAGE].long() // PAGE
        return StepInputs(
            seq_lens=torch.tensor(seq, device=dev), extend_lens=torch.tensor(step.ext, device=dev),
            req_pool_indices=rows, req_to_token=self.req_to_token, full_to_swa=pool.full_to_swa_index_mapping,
            compressed_page_tables={4: table, 128: table}, seq_lens_cpu=seq, extend_lens_cpu=list(step.ext),
            positions=pos, swa_page_size=pool.get_swa_key_page_size(),
            compressed_page_sizes={4: PAGE // 4, 128: PAGE // 128}, window=L.SWA_WINDOW,
        )


# ---------------------------------------------------------------------------
# The loop and the report
# ---------------------------------------------------------------------------


def _cpu_setup() -> None:
    import sglang.srt.layers.attention.deepseek_v4_backend as parent

    # FlashMLA's scheduler metadata and the compressors' JIT planner are CUDA-only (as bench_sglang_ab --tiny).
    parent._create_flashmla_metadata = lambda: None
    parent.create_paged_compressor_data = lambda **_: None


def _mb(n: int) -> float:
    return n / (1 << 20)


def dry_run(args) -> int:
    """Schedule only: what the steps would cover."""
    import torch

    p = args.profile
    rng = random.Random(args.seed)
    req_to_token = torch.zeros(p.rows, -(-p.max_context // PAGE) * PAGE, dtype=torch.int32)
    table = Table(req_to_token, p.pool_tokens // PAGE + 1, p.rows, p.cache_entries, rng, spare_tokens=p.draft_tokens)
    sched = Scheduler(p, table, rng)
    heads = collections.Counter()
    done = 0
    while done < args.steps:
        step = sched.next_step(done)
        if step is None:
            continue
        heads[step.heads] += 1
        sched.advance(step)
        done += 1
    report = dict(profile=args.profile_name, steps=args.steps, seed=args.seed, heads=dict(sorted(heads.items())),
                  coverage=sched.coverage())
    print(json.dumps(report, indent=1))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        if args.markdown:
            c = report["config"]
            run = "python scripts/soak_sglang.py" + {"quick": " --quick", "tiny": " --tiny"}.get(c["profile"], "")
            print(f"Run line: `{run} --seed {c['seed']}` ({c['steps_requested']} steps, compared every "
                  f"{c['compare_every']}th).\n\n```")
        print_summary(report, args.from_json)
        if args.markdown:
            print("```")
        return 0
    if args.dry_run:
        return dry_run(args)
    t_start = time.time()
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    sys.path.insert(0, os.path.join(ROOT, "tests", "sglang"))
    sys.path.insert(0, ROOT)
    import torch

    from sglang_dsv4_sparse.benchmarking import no_gpu

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        return no_gpu("soak_sglang.py", " (or --tiny for a CPU plumbing check, --dry-run for the schedule)")
    oracle = args.oracle or ("sglang" if device == "cuda" else "reference")
    if oracle == "sglang" and device != "cuda":
        return no_gpu("soak_sglang.py", " for --oracle sglang (SGLang's backend runs FlashMLA)")
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the package's kernels are defined
    import bench_sglang_ab  # sets the indexer settings SGLang needs without DeepGEMM (as its own run does)
    import stand_ins

    print("stand-ins:", stand_ins.install() or "none needed", flush=True)
    if device == "cpu":
        _cpu_setup()

    p = args.profile
    rng = random.Random(args.seed)
    if args.tiny:
        # A smaller SWA pool than the serving-sized 1M rows bench_sglang_ab gives every deployment (the
        # full-to-SWA map folds full ids onto it all the same): the CPU check builds in a second, not six.
        bench_sglang_ab.SWA_POOL_TOKENS = min(bench_sglang_ab.SWA_POOL_TOKENS, 1 << 15)
    soak = Soak(args, device, oracle)
    table = Table(soak.req_to_token, soak.dep.full_tokens // PAGE, p.rows, p.cache_entries, rng,
                  spare_tokens=p.draft_tokens)
    sched = Scheduler(p, table, rng)
    print(f"deployment: {soak.dep.full_tokens} full-cache tokens, {p.rows} request rows, context {soak.dep.max_context},"
          f" built in {soak.build_s:.0f} s; backends {', '.join(soak.names)}; oracle {oracle}; profile {args.profile_name}",
          flush=True)

    mismatches, nonfinite, errors = [], [], []
    counts = collections.Counter()
    heads_seen = collections.Counter()
    memory = dict(reads=[])
    stopped_by = "steps"

    def record(step, seen, compare):
        if compare:
            counts["compared"] += 1
        if seen["worst"] is not None:
            soak.worst = seen["worst"] if soak.worst is None else max(soak.worst, seen["worst"])
            soak.max_abs = max(soak.max_abs, seen["max_abs"])
            soak.rel = max(soak.rel, seen["rel"])
            counts["rel_norm_over_bound"] += seen["rel_over"]
        if seen["nonfinite"]:
            counts["nonfinite_steps"] += 1
            if len(nonfinite) < KEEP_EXAMPLES:
                nonfinite.append(dict(step=step.describe(), layers=[f"c{r}" for r in seen["nonfinite"]]))
        if seen["mismatch"]:
            counts["mismatch_steps"] += 1
            counts["mismatch_layers"] += len(seen["mismatch"])
            if len(mismatches) < KEEP_EXAMPLES:
                mismatches.append(dict(step=step.describe(), layers={f"c{r}": w for r, w in seen["mismatch"]}))

    def run_one(step, compare):
        try:
            seen = soak.run(step, compare)
        except Exception as exc:
            counts["errors"] += 1
            if len(errors) < KEEP_EXAMPLES:
                traceback.print_exc()
                errors.append(dict(step=step.describe(), error=f"{type(exc).__name__}: {exc}"[:400]))
            return
        record(step, seen, compare)

    # Warm-up: the envelope steps (CUDA: the peak memory of the stream is reached here).
    warmup = 0
    if device == "cuda":
        pinned = table.pin(p.max_context)
        for shape in envelope_steps(p):
            for heads in p.heads:
                for sparse in ((True, False) if shape[1] in ("EXTEND", "MIXED") else (None,)):
                    reqs, step = build_envelope(p, table, pinned, shape)
                    step.heads, step.sparse = heads, sparse
                    run_one(step, compare=True)
                    warmup += 1
                    for req in reqs:
                        table.release(req, cache_prefix=False)
        table.unpin(pinned)
        torch.cuda.synchronize()
        memory["after_warmup_mb"] = _mb(torch.cuda.max_memory_allocated())
        print(f"warm-up: {warmup} envelope steps, peak memory {memory['after_warmup_mb']:.1f} MB, "
              f"{time.time() - t_start:.0f} s", flush=True)

    def read_memory(done):
        if device == "cuda":
            torch.cuda.synchronize()
            memory["reads"].append(dict(step=done, mb=_mb(torch.cuda.max_memory_allocated())))

    done = 0
    while done < args.steps:
        if time.time() - t_start > args.max_seconds:
            stopped_by = "max_seconds"
            break
        if counts["errors"] >= MAX_ERRORS:
            stopped_by = "errors"
            break
        step = sched.next_step(done)
        if step is None:  # nothing live (every arrival rejected): the next draw brings more
            continue
        heads_seen[step.heads] += 1
        t_step = time.time()
        run_one(step, compare=(done + 1) % args.compare_every == 0)
        step_s = time.time() - t_step
        sched.advance(step)
        done += 1
        if done % args.memory_every == 0:
            read_memory(done)
        if done % args.progress_every == 0:
            mem = f", peak {memory['reads'][-1]['mb']:.1f} MB" if memory["reads"] and memory["reads"][-1]["step"] == done else ""
            print(f"[{done}/{args.steps}, {time.time() - t_start:.0f} s] live={len(table.live)}"
                  f" compared={counts['compared']} mismatches={counts['mismatch_steps']}"
                  f" nonfinite={counts['nonfinite_steps']} errors={counts['errors']}"
                  f" handed_to_sglang={soak.handed_to_sglang} fallback_calls={sum(soak.fallbacks.values())}{mem};"
                  f" last {step.describe()} in {step_s:.2f} s", flush=True)
    if not memory["reads"] or memory["reads"][-1]["step"] != done:
        read_memory(done)

    if device == "cuda":
        drift = max(r["mb"] for r in memory["reads"]) - memory["after_warmup_mb"] if memory["reads"] else 0.0
        memory["drift_mb"] = drift
    else:
        memory = dict(drift_mb="n/a", reason="CPU: no CUDA allocator to read")
    failures = []
    if counts["mismatch_steps"]:
        failures.append(f"{counts['mismatch_steps']} compared steps out of the kit's tolerance")
    if counts["nonfinite_steps"]:
        failures.append(f"{counts['nonfinite_steps']} steps with non-finite output")
    if counts["errors"]:
        failures.append(f"{counts['errors']} steps raised")
    if device == "cuda" and memory["drift_mb"] > args.max_drift_mb:
        failures.append(f"peak memory grew {memory['drift_mb']:.2f} MB after warm-up (limit {args.max_drift_mb} MB)")

    from sglang_dsv4_sparse.benchmarking import run_header

    report = dict(
        header=run_header(ROOT, packages=("sglang",)),
        config=dict(profile=args.profile_name, seed=args.seed, steps_requested=args.steps,
                    compare_every=args.compare_every, max_seconds=args.max_seconds, max_drift_mb=args.max_drift_mb,
                    device=device, backends=list(soak.names), oracle=oracle,
                    tolerance=dict(atol=soak.kr.kit().DSV4_ATOL, rtol=soak.kr.kit().DSV4_RTOL),
                    deployment=dict(full_tokens=soak.dep.full_tokens, rows=p.rows, max_context=soak.dep.max_context)),
        steps_run=done, stopped_by=stopped_by, warmup_steps=warmup,
        compared_steps=counts["compared"], mismatches=counts["mismatch_steps"],
        mismatch_layers=counts["mismatch_layers"], mismatch_examples=mismatches,
        worst_error=soak.worst, max_abs_diff=soak.max_abs, max_rel_norm_error=soak.rel,
        layers_over_rel_norm_bound=dict(bound=REL_NORM_BOUND, layers=counts["rel_norm_over_bound"]), nonfinite_steps=counts["nonfinite_steps"], nonfinite_examples=nonfinite,
        errors=counts["errors"], error_examples=errors, memory=memory,
        fallbacks=dict(reasons=dict(soak.fallbacks.most_common()), calls=sum(soak.fallbacks.values()),
                       steps_with_fallback=soak.steps_with_fallback, steps_handed_to_sglang=soak.handed_to_sglang),
        routes=dict(plan=dict(soak.plan_routes), layers=dict(soak.layer_routes) or None),
        coverage=dict(heads=dict(sorted(heads_seen.items())), **sched.coverage()),
        elapsed_s=time.time() - t_start, ok=not failures, failures=failures,
    )
    path = args.json or os.path.join(os.environ.get("OUT") or os.path.join(os.getcwd(), "gpu_check_out"), "soak_sglang.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print_summary(report, path)
    return 0 if not failures else EXIT_FAILED


def print_summary(r: dict, path: str) -> None:
    c, mem, fb = r["config"], r["memory"], r["fallbacks"]
    drift = mem["drift_mb"] if isinstance(mem["drift_mb"], str) else f"{mem['drift_mb']:+.2f} MB (peak after warm-up " \
        f"{mem['after_warmup_mb']:.1f} MB; limit {c['max_drift_mb']} MB)"
    cov = r["coverage"]
    worst = "-" if r["worst_error"] is None else f"{r['worst_error']:.3f}"
    modes = ", ".join(f"{k.split()[1]} {v}" for k, v in cov["stats"].items() if k.startswith("steps "))
    lines = [
        f"== soak_sglang ({r['header']['gpu']}, SGLang {r['header']['sglang']}, commit {r['header']['commit']};"
        f" profile {c['profile']}, seed {c['seed']}; backends {'+'.join(c['backends'])}, oracle {c['oracle']})",
        f"soak: steps {r['steps_run']}/{c['steps_requested']} (stopped by {r['stopped_by']}) + {r['warmup_steps']} warm-up;"
        f" {modes}; elapsed {r['elapsed_s']:.0f} s",
        f"soak: compared {r['compared_steps']} steps (1 in {c['compare_every']}"
        f"{', and every warm-up step' if r['warmup_steps'] else ''}) with {c['oracle']},"
        f" mismatches {r['mismatches']} (worst {worst} of the kit's tolerance, <= 1 passes; largest |diff|"
        f" {r['max_abs_diff']:.4f}, relative norm error {r['max_rel_norm_error']:.2e}, layers over"
        f" {r['layers_over_rel_norm_bound']['bound']:g} {r['layers_over_rel_norm_bound']['layers']}), non-finite steps"
        f" {r['nonfinite_steps']}, errors {r['errors']}",
        f"soak: peak memory drift after warm-up: {drift}",
        f"soak: fallbacks: {fb['calls']} calls in {fb['steps_with_fallback']} steps, {fb['steps_handed_to_sglang']} steps"
        f" handed to SGLang" + "".join(f"\n  fallback x{n}: {why}" for why, n in fb["reasons"].items()),
        f"soak: routes: plan {r['routes']['plan']}" + (f", layers {r['routes']['layers']}" if r["routes"]["layers"] else ""),
        f"soak: coverage: heads {cov['heads']}, decode batch sizes {cov['decode_batch_sizes']}"
        + (f", verify batch sizes {cov['verify_batch_sizes']}" if cov.get("verify_batch_sizes") else "") + ", max live"
        f" {cov['max_live_requests']}, max seq {cov['max_seq_len']}, max step tokens {cov['max_step_tokens']}",
        "soak: " + ", ".join(f"{k} {v}" for k, v in cov["stats"].items() if not k.startswith("steps ")),
    ]
    for m in r["mismatch_examples"]:
        lines.append(f"  mismatch: {m['step']}: {m['layers']}")
    for m in r["nonfinite_examples"]:
        lines.append(f"  non-finite: {m['step']}: {m['layers']}")
    for m in r["error_examples"]:
        lines.append(f"  error: {m['step']}: {m['error']}")
    lines.append(f"soak: {'OK' if r['ok'] else 'FAILED: ' + '; '.join(r['failures'])}; report {path}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
