"""How the sparse attention kernels are launched: heads per program, launch
configurations by head count and grid size, and the decode split-KV rule.

Everything here is decided from shapes and the device alone (so a CUDA graph
can capture the decode), and every list is tried in order by
:func:`launch_with_fallback`, which remembers the first config that fits the
device.  Resource figures are from compiling for sm_90 with Triton 3.7
(``ptxas -v``); the timings behind each choice (H200) are in
docs/design-notes.md ("Sparse prefill kernel", "Paged decode kernel"), today's
figures in BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Optional, Sequence

import torch
import triton
from triton.runtime.errors import OutOfResources

# A tl.dot needs every dim >= 16: the smallest head block, whatever h_q is.
MIN_BLOCK_H = 16
# Largest head block whose [BLOCK_H, 512] fp32 accumulator fits one SM's registers.
MAX_BLOCK_H = 64


@dataclass(frozen=True)
class KernelConfig:
    """One launch configuration: keys per loop step, warps, Triton pipeline depth,
    whether the kernel prefetches the next block into registers itself (then
    ``num_stages`` should be 1), whether scores are computed keys-major
    (``S^T = K Q^T``, see ``common._online_softmax_step_keys_major``), and whether the
    score dot is split across warpgroups (``SPLIT_SCORES`` in
    ``common._online_softmax_step``; heads-major only)."""

    block_n: int
    num_warps: int
    num_stages: int
    prefetch: bool = False
    keys_major: bool = False
    split_scores: bool = False

    def __post_init__(self) -> None:
        if self.keys_major and self.split_scores:
            raise ValueError("KernelConfig: split_scores applies to the heads-major score dot, not keys_major")

    def __str__(self) -> str:
        flags = ("p" if self.prefetch else "") + ("k" if self.keys_major else "") + ("x" if self.split_scores else "")
        return f"n{self.block_n}w{self.num_warps}s{self.num_stages}{flags}"


_CONFIG_CACHE: dict = {}


def launch_with_fallback(
    key: Hashable, configs: Sequence[KernelConfig], launch: Callable[[KernelConfig], None]
) -> KernelConfig:
    """Launch with the first config of ``configs`` that fits the device.

    Triton raises ``OutOfResources`` at the first launch of a config whose shared
    memory (or threads) exceed the SM's; the next config is then tried, and the
    one that worked is remembered under ``key`` so later calls go straight to it.
    """
    cached = _CONFIG_CACHE.get(key)
    if cached is not None:
        launch(cached)
        return cached
    failures = []
    for config in configs:
        try:
            launch(config)
        except OutOfResources as err:
            failures.append(f"{config}: {err}")
            continue
        _CONFIG_CACHE[key] = config
        return config
    raise RuntimeError("no launch configuration fits this device:\n  " + "\n  ".join(failures))


def cached_config(key: Hashable) -> Optional[KernelConfig]:
    """The config :func:`launch_with_fallback` settled on for ``key``, or None before its first launch."""
    return _CONFIG_CACHE.get(key)


# ---------------------------------------------------------------- prefill

# h > 32 (BLOCK_H 64): 8 warps (two warpgroups) hold the [64, 512] fp32
# accumulator at 128 registers a thread.  64 keys a step make both dots
# 64x64x512 wgmmas; the pipeliner copies each gathered [64, 512] bf16 tile
# (64 KB) asynchronously into a 2-deep shared ring that both dots read (K is
# V), next to the 64 KB q tile.  Splitting the score dot across the
# warpgroups adds P's exchange: 208 KB of shared memory, 255 registers, no
# spills.  At 64 and 128 heads it measured faster than the unsplit dot and the
# other configs timed (H200; docs/design-notes.md, "Sparse prefill kernel").
# The next entries need less shared memory.
PREFILL_CONFIGS_WIDE = (
    KernelConfig(64, 8, 2, split_scores=True),
    KernelConfig(64, 8, 2),
    KernelConfig(32, 8, 3),
    KernelConfig(16, 8, 1, prefetch=True),
    KernelConfig(16, 4, 1),
)
# h <= 32 (BLOCK_H 16 or 32): 32-64 FLOPs per gathered key byte, so the row
# gather matters as much as the dots; 4 warps keep two programs on an SM.
PREFILL_CONFIGS_NARROW = (
    KernelConfig(64, 4, 2),
    KernelConfig(32, 4, 3),
    KernelConfig(32, 8, 1, prefetch=True),
    KernelConfig(16, 4, 1),
)
# BLOCK_H 16 puts the keys-major score dot first: at 16 heads it measured
# faster than the heads-major configs; more stages or warps keep one program an
# SM and were slower (H200; docs/design-notes.md, "Sparse prefill kernel").
# At BLOCK_H 32 (not measured) the keys-major tile spills more (920 bytes of
# stack in the sm_90 compile), so that width keeps the heads-major list.
PREFILL_CONFIGS_H16 = (KernelConfig(64, 4, 2, keys_major=True),) + PREFILL_CONFIGS_NARROW


def block_h_for(h_q: int) -> int:
    """Heads per program of the prefill kernel: ``h_q`` rounded up to a power of two, clamped to [16, 64]."""
    return min(MAX_BLOCK_H, max(MIN_BLOCK_H, triton.next_power_of_2(h_q)))


def prefill_configs(block_h: int) -> tuple[KernelConfig, ...]:
    """The prefill launch configurations to try, in order, for a head block of ``block_h``."""
    if block_h == MAX_BLOCK_H:
        return PREFILL_CONFIGS_WIDE
    return PREFILL_CONFIGS_H16 if block_h == MIN_BLOCK_H else PREFILL_CONFIGS_NARROW


def shared_rows_configs() -> tuple[KernelConfig, ...]:
    """The shared-row kernel's configurations (``shared_rows.py``): its 64 q rows
    are a wide head block's, so the wide prefill list minus the hand-prefetched
    entry, which that kernel does not implement."""
    return tuple(cfg for cfg in PREFILL_CONFIGS_WIDE if not cfg.prefetch)


# ---------------------------------------------------------------- decode

# BLOCK_H 64 (wgmma): 8 warps for the [64, 512] fp32 accumulator, 64-key
# tiles (32-key tiles and hand-pipelined loops measured slower), and the score
# dot split across the two warpgroups (common._online_softmax_step), which
# measured faster than the unsplit dot at every 64- and 128-head batch timed.
# Pipeline depth by grid size (rows x head blocks, before splits).  Up to 3
# stages the pipeliner (Triton's sm_90 TTGIR shows) keeps one row buffer and
# waits for every copy at the top of each block; at 5 it keeps two (227 KB of
# shared memory) and leaves the next gather in flight.  Grids above
# WIDE_UNPIPELINED_MAX_PROGRAMS walk many blocks per program and take 5
# stages.  Smaller grids are split into programs of 1-3 blocks, where the
# pipeline's copies and waits cost more than they hide: no pipelining, rows
# loaded straight into registers.  The figures behind each choice (H200):
# docs/design-notes.md, "Paged decode kernel"; today's: BENCHMARKS.md.
DECODE_CONFIGS_WIDE_FEW = (
    KernelConfig(64, 8, 1, split_scores=True),
    KernelConfig(64, 8, 3, split_scores=True),
    KernelConfig(64, 8, 3),
    KernelConfig(32, 8, 3),
    KernelConfig(16, 8, 1, prefetch=True),
    KernelConfig(32, 8, 1, prefetch=True),
    KernelConfig(16, 8, 3),
)
DECODE_CONFIGS_WIDE = (KernelConfig(64, 8, 5, split_scores=True),) + DECODE_CONFIGS_WIDE_FEW
WIDE_UNPIPELINED_MAX_PROGRAMS = 32

# BLOCK_H 16, by grid size, each the fastest of the configs timed (H200,
# docs/design-notes.md, "Paged decode kernel"): up to NARROW_FEW_MAX_PROGRAMS
# rows x head blocks, 64-key tiles on 8 warps without pipelining.  Above,
# 64-key tiles on 4 warps with the keys-major score dot (a wgmma with M = 64
# keys instead of an mma.sync with M = 16 heads) and no pipelining: 82 KB of
# shared memory, so two programs share an SM and each hides the other's
# gathers; the former 32-key, 2-stage default comes next (with 2 stages the
# keys-major tile needs 123 KB and one program an SM, which measured slower).
DECODE_CONFIGS_NARROW_FEW = (
    KernelConfig(64, 8, 1),
    KernelConfig(64, 8, 2),
    KernelConfig(32, 8, 1, prefetch=True),
    KernelConfig(16, 4, 1, prefetch=True),
)
DECODE_CONFIGS_NARROW_MANY = (
    KernelConfig(64, 4, 1, keys_major=True),
    KernelConfig(32, 4, 2),
    KernelConfig(32, 4, 3),
    KernelConfig(16, 4, 1, prefetch=True),
    KernelConfig(16, 4, 3),
)
# Largest rows x head blocks that takes DECODE_CONFIGS_NARROW_FEW.
NARROW_FEW_MAX_PROGRAMS = 16

# Programs an SM runs at once, per head-block width, for the split rule: the
# 64-head program takes all of an SM's registers; the 16-head one half.
PROGRAMS_PER_SM_WIDE = 1
PROGRAMS_PER_SM_NARROW = 2
# A split's fixed cost (loading q, writing an fp32 partial of up to 128 KB,
# merging it) is worth paying for at least this many keys.
MIN_KEYS_PER_SPLIT = 64
# Up to one narrow block of heads the decode kernel runs 16-head blocks
# (mma.sync); above, 64-head blocks (wgmma) except for single-program batches
# (see decode_block_h).  There is no 32-head block: it spills with mma.sync
# whatever the config, and padding 17..32 heads to 64 costs only tensor-core time.
_DECODE_NARROW_H = MIN_BLOCK_H
# Used for the split rule under the interpreter (an H100's SM count), so CPU
# tests take the same split decisions as the GPU.
DEFAULT_NUM_SMS = 132
# Above 16 heads, a batch of at most this many 64-head programs runs 16-head
# programs instead: faster there, and slower or even at every larger grid
# measured (H200, docs/design-notes.md, "Paged decode kernel").
NARROW_MAX_WIDE_PROGRAMS = 1

# Merge of the split partials: 8 heads x 128 columns of fp32 per program, so
# that even b = 1 spreads the merge over (512 / 128) * h / 8 programs.
MERGE_BLOCK_H = 8
MERGE_BLOCK_D = 128
MERGE_NUM_WARPS = 4

_SM_COUNT: dict = {}


def num_sms(device: torch.device) -> int:
    """The device's SM count (cached); ``DEFAULT_NUM_SMS`` off CUDA (the interpreter)."""
    if device.type != "cuda":
        return DEFAULT_NUM_SMS
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def decode_program_slots(device: torch.device, block_h: int) -> int:
    """Programs of ``block_h`` heads the device runs at once: the split rule's ``program_slots``."""
    return num_sms(device) * (PROGRAMS_PER_SM_WIDE if block_h == MAX_BLOCK_H else PROGRAMS_PER_SM_NARROW)


def plan_splits(
    rows: int, head_blocks: int, total_blocks: int, program_slots: int, min_blocks: int = 1
) -> tuple[int, int]:
    """``(num_splits, blocks_per_split)`` from shapes only (CUDA-graph safe).

    No split while the grid already fills half the program slots; otherwise cut
    each row's ``total_blocks`` key blocks into at most ``slots / programs``
    ranges of equal length (the last may be shorter) of at least
    ``min_blocks`` blocks, none empty.
    """
    total_blocks = max(total_blocks, 1)
    programs = rows * head_blocks
    if 2 * programs > program_slots or total_blocks <= min_blocks:
        return 1, total_blocks
    want = max(1, min(total_blocks // min_blocks, program_slots // max(programs, 1)))
    per_split = triton.cdiv(total_blocks, want)
    return triton.cdiv(total_blocks, per_split), per_split


def decode_block_h(h_q: int, rows: Optional[int] = None) -> int:
    """Heads per program of the decode kernel: 16 or 64.

    16 up to 16 heads.  Above, 64 (wgmma, one key gather per 64 heads), except
    when the whole batch is at most ``NARROW_MAX_WIDE_PROGRAMS`` such programs:
    then 16-head programs (4-8 per row, the later ones finding the row's keys
    in L2) finish sooner than one program walking every key.
    """
    if h_q <= _DECODE_NARROW_H:
        return MIN_BLOCK_H
    if rows is not None and rows * triton.cdiv(h_q, MAX_BLOCK_H) <= NARROW_MAX_WIDE_PROGRAMS:
        return MIN_BLOCK_H
    return MAX_BLOCK_H


def decode_configs(h_q: int, block_h: int, rows: int) -> tuple[str, tuple[KernelConfig, ...]]:
    """The decode launch configurations to try, in order, and the name of that list."""
    programs = rows * triton.cdiv(h_q, block_h)  # before splits
    if block_h == MAX_BLOCK_H:
        if programs <= WIDE_UNPIPELINED_MAX_PROGRAMS:
            return "wide-few", DECODE_CONFIGS_WIDE_FEW
        return "wide", DECODE_CONFIGS_WIDE
    if programs <= NARROW_FEW_MAX_PROGRAMS:
        return "narrow-few", DECODE_CONFIGS_NARROW_FEW
    return "narrow-many", DECODE_CONFIGS_NARROW_MANY


# ---------------------------------------------------------------- verify

# The verify kernel (verify_paged.py) stacks a request's draft tokens and a
# block of heads into one tile of q rows, so that each key row gathered for
# the request serves every token that may see it.  64 rows is the wide decode
# block (one warpgroup pair holds its [64, 512] fp32 accumulator).
VERIFY_MAX_ROWS = MAX_BLOCK_H

# Not yet timed on a GPU.  Wide (64 rows): the decode kernel's measured
# first choice for small grids (64-key tiles, 8 warps, score dot split across
# the warpgroups), then smaller key tiles.  Narrow (16 or 32 rows): 32-key
# tiles on 8 warps first: with 64-key tiles ptxas spilled several times as
# much here as in the decode kernel at the same shape (sm_90, Triton 3.7,
# ``ptxas -v``; the nested pass/segment/key loops keep more state live).
VERIFY_CONFIGS_WIDE = (
    KernelConfig(64, 8, 1, split_scores=True),
    KernelConfig(32, 8, 1),
    KernelConfig(16, 8, 1),
)
VERIFY_CONFIGS_NARROW = (
    KernelConfig(32, 8, 1),
    KernelConfig(64, 8, 1),
    KernelConfig(16, 4, 1),
)


def verify_tile(h_q: int, tokens_per_request: int) -> tuple[int, int, int]:
    """``(tokens, heads, rows)`` of a verify program's tile, from shapes only.

    ``tokens``: ``tokens_per_request`` rounded up to a power of two (at most
    64); ``heads``: as many of the ``h_q`` heads (rounded up to a power of two)
    as fit ``VERIFY_MAX_ROWS`` rows beside them; ``rows``: ``tokens * heads``,
    at least ``MIN_BLOCK_H`` (a dot's smallest M; the extra rows are masked).
    A request with more tokens than ``tokens`` is walked in several passes.
    """
    tokens = min(triton.next_power_of_2(max(tokens_per_request, 1)), VERIFY_MAX_ROWS)
    heads = min(triton.next_power_of_2(max(h_q, 1)), max(1, VERIFY_MAX_ROWS // tokens))
    return tokens, heads, max(MIN_BLOCK_H, tokens * heads)


def verify_configs(rows: int) -> tuple[KernelConfig, ...]:
    """The verify launch configurations to try, in order, for a tile of ``rows`` q rows."""
    return VERIFY_CONFIGS_WIDE if rows == VERIFY_MAX_ROWS else VERIFY_CONFIGS_NARROW
