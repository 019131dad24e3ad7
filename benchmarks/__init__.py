"""Benchmark-only kernels: what the benchmark scripts time beside the shipped
kernels, kept out of the installed package (``pyproject.toml`` ships
``sglang_dsv4_sparse`` only).

* ``row_gather_ceiling.gather_rows_raw``: the dequant's bytes with no
  arithmetic, the access pattern's own bandwidth ceiling
  (``scripts/bench_kernels.py``).
* ``row_gather_floor.xor_gathered_rows``: the rows a sparse prefill gathers,
  only XORed, a floor under any attention kernel's row traffic
  (``scripts/bench_attention.py``).
* ``staged.sparse_mla_decode_staged``: the gather-dequantize-then-attend
  decode baseline (``scripts/bench_attention.py``).

Imported as ``benchmarks.*`` from the repository root: the scripts put the
root on ``sys.path``, and so does ``tests/conftest.py`` for their tests
(``tests/benchmarks/``). ``results/`` holds the JSON the scripts saved, from
which ``scripts/benchmarks_md.py`` prints BENCHMARKS.md.
"""
