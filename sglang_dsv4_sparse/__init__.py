"""sglang-dsv4-sparse: a DeepSeek-V4 sparse-attention backend for SGLang."""

__version__ = "0.1.0"
