"""Command-line tools that ship with sglang-dsv4-sparse.

- ``kernel_diff``: compare GPU kernel time between two PyTorch profiler
  traces (``dsv4-kernel-diff A B``).
- ``trace_reader``: the streaming Chrome-trace reader behind it.

Nothing here imports torch or SGLang, so the tools run on any machine that
has the traces.
"""
