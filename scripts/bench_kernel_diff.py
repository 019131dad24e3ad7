#!/usr/bin/env python3
"""Time dsv4-kernel-diff on a generated trace of a requested size.

    python scripts/bench_kernel_diff.py --size-mb 1024 [--gzip] [--strict] [--dir DIR] [--keep]

Writes a Kineto-shaped trace (cpu_op / cuda_runtime / kernel / flow events,
pretty-printed the way torch.profiler exports them) into a temp dir (or
``--dir DIR``), then times (1) reading it once and (2) the full
``kernel_diff.main`` on the file against itself, i.e. two traces of that
size.  Prints seconds.  The trace (about ``--size-mb``, 1 GB by default) is
deleted at the end, ``--dir`` or not, unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sglang_dsv4_sparse.tools import kernel_diff, trace_reader  # noqa: E402

KERNELS = [
    "void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)"
    "::launch_clamp_scalar(at::TensorIteratorBase&, c10::Scalar, c10::Scalar, "
    "at::native::detail::ClampLimits)::{lambda()#1}::operator()() const::{lambda()#8}"
    "::operator()() const::{lambda(float)#1}, at::detail::Array<char*, 2> >(int, "
    "at::native::(anonymous namespace)::launch_clamp_scalar(at::TensorIteratorBase&, "
    "c10::Scalar, c10::Scalar, at::native::detail::ClampLimits)::{lambda()#1}::operator()()"
    " const::{lambda()#8}::operator()() const::{lambda(float)#1}, at::detail::Array<char*, 2>)",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_"
    "segment_k_off_kernel__5x_cublas",
    "void flash::flash_fwd_splitkv_mla_kernel<Flash_fwd_kernel_traits_mla<576, 64, 64, 8, "
    "cutlass::bfloat16_t, 512>, true>(Flash_fwd_mla_params)",
    "_dsv4_sparse_attn_fwd_kernel",
    "_fused_indexer_topk_kernel",
    "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)",
    "triton_poi_fused_add_mul_rsqrt_0",
    "void deep_gemm::fp8_gemm_kernel<128u, 128u, 128u, 1u, 8u>(__nv_bfloat16*, float*, int*, "
    "unsigned int)",
]

CPU_OP = """  {{
    "ph": "X", "cat": "cpu_op", "name": "aten::{op}", "pid": 1234, "tid": 1234,
    "ts": {ts:.3f}, "dur": {cdur:.3f},
    "args": {{
      "External id": {ext},"Record function id": 0, "Concrete Inputs": ["", ""], "Input type": ["c10::BFloat16", "c10::BFloat16"], "Input Strides": [[7168, 1], [7168, 1]], "Input Dims": [[32768, 7168], [7168, 1536]], "Ev Idx": {ext}
    }}
  }},
  {{
    "ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1234, "tid": 1234,
    "ts": {ts2:.3f}, "dur": 4.120,
    "args": {{
      "External id": {ext},  "cbid": 211, "correlation": {corr}
    }}
  }},
  {{
    "ph": "X", "cat": "kernel", "name": "{kernel}", "pid": 0, "tid": 7,
    "ts": {ts3:.3f}, "dur": {kdur:.3f},
    "args": {{
      "External id": {ext},
      "queued": 0, "device": 0, "context": 1,
      "stream": 7, "correlation": {corr},
      "registers per thread": 128,
      "shared memory": 49152,
      "blocks per SM": 1.5,
      "warps per SM": 12.0,
      "grid": [132, 1, 1],
      "block": [384, 1, 1],
      "est. achieved occupancy %": 19
    }}
  }},
  {{
    "ph": "f", "id": {corr}, "pid": 0, "tid": 7, "ts": {ts3:.3f},
    "cat": "ac2g", "name": "ac2g", "bp": "e"
  }},
"""

OPS = ["mm", "add", "mul", "rsqrt", "copy_", "topk", "index_select"]


def render_block(rng: random.Random, n_ops: int) -> str:
    out = io.StringIO()
    ts = rng.uniform(1e12, 2e12)
    for i in range(n_ops):
        ext = rng.randrange(1, 10**7)
        out.write(
            CPU_OP.format(
                op=rng.choice(OPS),
                ts=ts,
                ts2=ts + 3.0,
                ts3=ts + 9.0,
                cdur=rng.uniform(5, 50),
                kdur=rng.uniform(1, 500),
                ext=ext,
                corr=ext + 7,
                kernel=rng.choice(KERNELS).replace('"', '\\"'),
            )
        )
        ts += 60.0
    return out.getvalue()


def write_trace(path: Path, size_bytes: int, use_gzip: bool, seed: int = 0) -> int:
    """Write a trace of about ``size_bytes`` (uncompressed); returns kernel events."""
    rng = random.Random(seed)
    # Distinct pre-rendered blocks, repeated: generation stays I/O bound.
    blocks = [render_block(rng, 500) for _ in range(32)]
    per_block_kernels = 500
    header = (
        '{\n  "schemaVersion": 1,\n  "deviceProperties": [\n    {\n      "id": 0, '
        '"name": "NVIDIA H200", "totalGlobalMem": 150000000000\n    }\n  ],\n'
        '  "displayTimeUnit": "ms",\n  "traceEvents": [\n'
    )
    footer = (
        '  {\n    "ph": "i", "s": "g", "name": "Record Window End", "pid": "", '
        '"tid": "", "ts": 1\n  }\n],\n  "traceName": "bench.pt.trace.json"\n}\n'
    )
    opener = gzip.open if use_gzip else open
    written = 0
    kernels = 0
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write(header)
        written += len(header)
        while written < size_bytes:
            block = rng.choice(blocks)
            fh.write(block)
            written += len(block)
            kernels += per_block_kernels
        fh.write(footer)
    return kernels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=1024, help="uncompressed trace size (MB, default 1024)")
    ap.add_argument("--gzip", action="store_true", help="write a .json.gz trace")
    ap.add_argument("--strict", action="store_true", help="time the strict (full-decode) reader too")
    ap.add_argument("--dir", help="where to write the trace (default: a temp dir); deleted after the run "
                                  "unless --keep")
    ap.add_argument("--keep", action="store_true", help="keep the generated trace (its path is printed)")
    args = ap.parse_args(argv)

    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="dsv4_bench_"))
    made_dir = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / ("bench.pt.trace.json" + (".gz" if args.gzip else ""))
    try:
        t0 = time.perf_counter()
        kernels = write_trace(path, int(args.size_mb * (1 << 20)), args.gzip)
        size = os.path.getsize(path)
        print(f"generated {path} ({size / (1 << 20):.1f} MiB on disk, {kernels} kernel events) "
              f"in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        stats = trace_reader.read_traces(path)
        read_s = time.perf_counter() - t0
        got = sum(c for c, _ in stats.kernels.values())
        assert got == kernels, f"reader found {got} kernel events, expected {kernels}"
        print(f"fast read, one trace:   {read_s:.2f} s  ({size / (1 << 20) / read_s:.0f} MiB/s)")

        if args.strict:
            t0 = time.perf_counter()
            strict = trace_reader.read_traces(path, strict=True)
            print(f"strict read, one trace: {time.perf_counter() - t0:.2f} s")
            assert strict.kernels == stats.kernels

        t0 = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            rc = kernel_diff.main([str(path), str(path), "--quiet"])
        diff_s = time.perf_counter() - t0
        print(f"kernel_diff A=B (2 x {size / (1 << 20):.0f} MiB): {diff_s:.2f} s (rc={rc})")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {peak:.0f} MiB; {os.cpu_count()} CPUs")
    finally:
        if args.keep:
            print(f"kept {path}")
        elif not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            # Only what this run wrote: the trace, and DIR if the run made it and it is now empty.
            path.unlink(missing_ok=True)
            if made_dir and not any(workdir.iterdir()):
                workdir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
