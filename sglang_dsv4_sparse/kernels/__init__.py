"""Triton kernels; each kernel module holds its ``@triton.jit`` kernel(s) and one
thin validating wrapper.  The wrappers the core calls every layer hand over to an
unchecked body (``_<name>``), which the core calls itself after checking its
own arguments once.  Shared pieces: ``paged_rows`` (where a token's bytes
sit), ``triton_utils`` (interpreter and launch device), ``indices.request_search``,
and in ``sparse_attn`` the attention steps (``common``) and launch configurations
(``configs``)."""
