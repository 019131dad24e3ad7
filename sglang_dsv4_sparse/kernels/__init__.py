"""Triton kernels; each module holds one kernel and its thin validating wrapper."""
