"""Triton kernels; each kernel module holds its ``@triton.jit`` kernel(s) and one
thin validating wrapper.  Shared pieces: ``paged_rows`` (where a token's bytes
sit), ``triton_utils`` (interpreter and launch device), ``indices.request_search``,
and in ``sparse_attn`` the attention steps (``common``) and launch configurations
(``configs``)."""
