"""Which route each layer of a sparse-prefill step takes, and at how many heads: decided here only.

A step's layers are window-only (ratio 0), C4 or C128. Each ratio's layers take
one route for the whole step:

* ``"sglang"``: SGLang's own attention, unchanged (its chunk cache, its index
  rows, FlashMLA on the query as the model hands it over);
* one of this package's routes (``core.forward.PREFILL_ROUTES``): below 64
  heads ``"shared"`` (C0), ``"native"`` (C4) and ``"folded"`` (C128) at the
  rank's real heads; ``"index"`` (FlashMLA or its Triton twin on index rows).

Under ``SGLANG_DSV4_SPARSE_PREFILL_ROUTE=auto`` the route depends on the step's
shape (query rows, requests, longest request, real heads) and comes from a
:class:`RouteTable`: per-layer times of SGLang's route and ours measured
inside SGLang's step on one GPU kind (``scripts/bench_sglang_ab.py
--route-table``), kept as data with its run header in ``route_tables/``. A
ratio takes our route only where it measured faster by more than
:data:`MIN_GAIN`, and the step takes any of ours only where their gain pays
for our plan (also measured); otherwise the whole step is SGLang's and we
build nothing. Where FlashMLA cannot run (or Triton is forced) SGLang's route
is not an option and ours run everywhere. Why the table, and not a rule:
docs/design-notes.md, "Routes by shape".
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .kernels.sparse_attn.shared_rows import BLOCK_M as SHARED_ROW_MAX_HEADS

ROUTE_SGLANG = "sglang"
ROUTE_PAGED = "paged"
ROUTE_VERIFY = "verify"
# Whether ``auto`` runs verify and draft-extend steps below 64 heads on our verify kernel. Off: inside
# SGLang's step it measured slower than SGLang's FlashMLA on the padded query (BENCHMARKS.md section 4,
# the verify A/B; docs/design-notes.md, "Verify steps"), so ``auto`` hands these steps to SGLang whole
# and ``ours`` runs the kernel.
VERIFY_KERNEL_IN_AUTO = False
LAYER_RATIOS = (0, 4, 128)
# This package's routes below 64 heads (the shared-row kernel's tile), each the
# fastest of its layer kind when timed alone (BENCHMARKS.md section 5).
NARROW_ROUTES = {0: "shared", 4: "native", 128: "folded"}
NARROW_MAX_HEADS = SHARED_ROW_MAX_HEADS
# A route replaces SGLang's only when it measured this much faster (run-to-run noise is a few percent).
MIN_GAIN = 0.05
ROUTE_TABLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "route_tables")


@dataclass(frozen=True)
class StepShape:
    """What the route depends on: query rows, requests, the longest request (after the step), real heads."""

    num_tokens: int
    num_reqs: int
    max_seq_len: int
    heads: int

    def features(self) -> tuple:
        # Log scale: costs grow with chunk size and with compressed rows per query (the prefix).
        return (math.log2(max(self.num_tokens, 1)), math.log2(max(self.max_seq_len, 1)),
                math.log2(max(self.num_reqs, 1)))


@dataclass
class TableEntry:
    shape: StepShape
    layer_ms: Dict[int, Dict[str, float]]  # ratio -> {"sglang": ms, "ours": ms}
    plan_ms: float  # our plan's cost on top of SGLang's metadata and chunk cache


@dataclass
class RouteTable:
    """Per-layer times of SGLang's route and ours inside SGLang's step, on one GPU kind."""

    header: dict
    entries: List[TableEntry] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> "RouteTable":
        entries = []
        for e in data.get("entries", []):
            shape = StepShape(int(e["tokens"]), int(e["reqs"]), int(e["max_seq_len"]), int(e["heads"]))
            layers = {int(r): {k: float(v) for k, v in ms.items()} for r, ms in e["layer_ms"].items()}
            entries.append(TableEntry(shape, layers, float(e["plan_ms"])))
        return cls(dict(data.get("header", {})), entries)

    @classmethod
    def load(cls, path: str) -> "RouteTable":
        try:
            with open(path) as f:
                return cls.from_json(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"route table {path!r} cannot be read: {type(exc).__name__}: {exc}") from exc

    def to_json(self) -> dict:
        return dict(header=self.header, entries=[
            dict(tokens=e.shape.num_tokens, reqs=e.shape.num_reqs, max_seq_len=e.shape.max_seq_len,
                 heads=e.shape.heads, plan_ms=e.plan_ms, layer_ms={str(r): ms for r, ms in e.layer_ms.items()})
            for e in self.entries
        ])

    def nearest(self, shape: StepShape) -> Optional[TableEntry]:
        """The measured entry closest to ``shape``: the nearest head count, then the nearest shape in log scale."""
        if not self.entries:
            return None
        heads = min({e.shape.heads for e in self.entries}, key=lambda h: (abs(math.log2(h / shape.heads)), h))
        x = shape.features()
        return min((e for e in self.entries if e.shape.heads == heads),
                   key=lambda e: sum((a - b) ** 2 for a, b in zip(e.shape.features(), x)))


def table_key(capability: tuple) -> str:
    """The file name a GPU's route table is shipped under: one per architecture (``sm90.json``)."""
    return f"sm{capability[0]}{capability[1]}.json"


@functools.lru_cache(maxsize=None)
def shipped_table(capability: tuple) -> Optional[RouteTable]:
    path = os.path.join(ROUTE_TABLE_DIR, table_key(capability))
    return RouteTable.load(path) if os.path.exists(path) else None


@dataclass(frozen=True, eq=False)
class RoutePolicy:
    """How a backend routes its sparse-prefill layers; made once, from the settings and the device.

    ``mode``: ``SGLANG_DSV4_SPARSE_PREFILL_ROUTE``. ``sglang_available``: whether
    SGLang's own route can run here (FlashMLA usable, Triton not forced).
    """

    mode: str
    sglang_available: bool
    table: Optional[RouteTable] = None

    @property
    def paged_to_sglang(self) -> bool:
        """Whether steps on the paged route (decodes, dense extends) run SGLang's attention unchanged.

        There both backends run the same FlashMLA kernel on the same index rows
        (ours on views of SGLang's metadata), so ours can only add host time;
        ``ours`` and ``index`` keep them on this package's path (tests, A/B).
        """
        return self.sglang_available and self.mode in ("auto", ROUTE_SGLANG)

    def row_step_route(self, kind: str, heads: int) -> str:
        """The route of a step whose metadata SGLang builds per query row: ``kind`` is ``"decode"``
        (plain or speculative), ``"verify"`` (target verify) or ``"draft_extend"``.

        ``"sglang"``: SGLang's attention; ``ROUTE_PAGED``: ours on views of SGLang's per-row index
        rows (FlashMLA where it runs, our paged Triton kernel elsewhere); ``ROUTE_VERIFY``: our
        verify kernel, one program per request's draft tokens at the rank's real heads, reading
        the rows they share once (below 64 heads; docs/design-notes.md, "Verify steps").
        """
        narrow_chain = kind in ("verify", "draft_extend") and heads < NARROW_MAX_HEADS
        if self.paged_to_sglang:
            return ROUTE_VERIFY if narrow_chain and self.mode == "auto" and VERIFY_KERNEL_IN_AUTO else ROUTE_SGLANG
        return ROUTE_VERIFY if narrow_chain else ROUTE_PAGED

    def plans_row_step(self, kind: str) -> bool:
        """Whether a per-row step of ``kind`` needs our plan: some head count takes one of our routes
        (the layer decides at its real heads, :meth:`row_step_route`)."""
        return any(self.row_step_route(kind, heads) != ROUTE_SGLANG for heads in (1, NARROW_MAX_HEADS))

    def routes(self, shape: StepShape, ratios=LAYER_RATIOS, *, sglang_takes_query: bool = True) -> Dict[int, str]:
        """Each ratio's route for a step of ``shape``.

        ``sglang_takes_query``: SGLang's attention can run the query as handed
        over (FlashMLA takes 64 or 128 heads: the model pads a rank's heads to 64).
        Decided once per step, so the lookup is cached per shape (a serving
        process sees few distinct chunk shapes; lengths are bucketed, see
        :func:`_bucket`).
        """
        return dict(self._routes(_bucket(shape), tuple(ratios), sglang_takes_query))

    def all_sglang(self, num_tokens: int, num_reqs: int, max_seq_len: int, heads: int,
                   ratios: tuple = LAYER_RATIOS) -> bool:
        """Whether every layer of a sparse-prefill step of this shape takes SGLang's route (ours then builds
        nothing). Asked once a step on SGLang's host path: one cached lookup on plain ints, no copy."""
        return self._all_sglang(_round_up(num_tokens), num_reqs, _round_up(max_seq_len), heads, ratios)

    @functools.lru_cache(maxsize=4096)
    def _all_sglang(self, num_tokens: int, num_reqs: int, max_seq_len: int, heads: int, ratios: tuple) -> bool:
        shape = StepShape(num_tokens, num_reqs, max_seq_len, heads)
        return all(r == ROUTE_SGLANG for r in self._routes(shape, ratios, True).values())

    @functools.lru_cache(maxsize=4096)
    def _routes(self, shape: StepShape, ratios: tuple, sglang_takes_query: bool) -> Dict[int, str]:
        mode = self.mode
        if (not self.sglang_available or not sglang_takes_query) and mode in ("auto", ROUTE_SGLANG):
            mode = "ours"  # SGLang's route needs FlashMLA: ours is the only one here
        if mode == ROUTE_SGLANG:
            return {r: ROUTE_SGLANG for r in ratios}
        if mode == "index":
            return {r: "index" for r in ratios}
        narrow = shape.heads < NARROW_MAX_HEADS
        if mode == "ours":
            return {r: NARROW_ROUTES[r] if narrow else "index" for r in ratios}
        return self._measured(shape, ratios)

    def _measured(self, shape: StepShape, ratios) -> Dict[int, str]:
        """``auto``: our route where the table says it pays, else SGLang's."""
        entry = None if self.table is None or shape.heads >= NARROW_MAX_HEADS else self.table.nearest(shape)
        if entry is None:
            # At 64 heads and more both sides run FlashMLA on the same index rows
            # (ours only adds its plan); without a table nothing says ours wins.
            return {r: ROUTE_SGLANG for r in ratios}
        routes, gain = {}, 0.0
        for r in ratios:
            ms = entry.layer_ms.get(r, {})
            theirs, ours = ms.get(ROUTE_SGLANG), ms.get("ours")
            if theirs is not None and ours is not None and ours < theirs * (1 - MIN_GAIN):
                routes[r] = NARROW_ROUTES[r]
                gain += theirs - ours
            else:
                routes[r] = ROUTE_SGLANG
        if gain <= entry.plan_ms:
            return {r: ROUTE_SGLANG for r in ratios}
        return routes


def _round_up(n: int) -> int:
    """``n`` rounded up to 1/16 of its power of two (at most 6% more)."""
    if n <= 16:
        return n
    step = 1 << (n.bit_length() - 5)
    return -(-n // step) * step


def _bucket(shape: StepShape) -> StepShape:
    """``shape`` with its lengths rounded up (:func:`_round_up`): table lookups are nearest-neighbour in log
    scale anyway, and the decision cache stays small."""
    return StepShape(_round_up(shape.num_tokens), shape.num_reqs, _round_up(shape.max_seq_len), shape.heads)


def make_policy(mode: str, *, flashmla_usable: bool, kernels: str, capability: Optional[tuple],
                table_path: Optional[str] = None) -> RoutePolicy:
    """The backend's policy: ``table_path`` (``SGLANG_DSV4_SPARSE_ROUTE_TABLE``) or the table shipped for ``capability``."""
    table = None
    if mode == "auto":
        if table_path:
            table = RouteTable.load(table_path)
        elif capability is not None:
            table = shipped_table(tuple(capability))
    return RoutePolicy(mode, flashmla_usable and kernels != "triton", table)


def kernel_heads(route: Optional[str], real_heads: int, width: int, choice) -> int:
    """How many of a query's ``width`` heads (the real ones, then SGLang's zero padding) a route's kernels take.

    The paged route (``None``) and index rows hand FlashMLA the padded query as
    it is, no copy (``choice.heads_to_run``); every other route runs the
    real heads on the Triton kernels.
    """
    if route in (None, "index") and real_heads < width:
        return choice.heads_to_run(real_heads, width)
    return real_heads


def describe_routes(routes: Dict[int, str]) -> str:
    return ", ".join(f"C{r}={routes[r]}" for r in sorted(routes))
