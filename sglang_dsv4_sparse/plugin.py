"""The SGLang plugin: entry point ``dsv4_sparse`` in group ``sglang.srt.plugins``.

SGLang's ``load_plugins()`` calls :func:`install` in every process (after
filtering entry points by the ``SGLANG_PLUGINS`` whitelist, which must then
name ``dsv4_sparse``). ``install`` replaces the ``"dsv4"`` factory in
``sglang.srt.layers.attention.attention_registry.ATTENTION_BACKENDS`` with one
that builds :class:`~sglang_dsv4_sparse.sglang_backend.DeepseekV4SparseAttnBackend`
and falls back to the original factory for what it does not handle.

It leaves SGLang untouched (and says why) when ``SGLANG_DSV4_SPARSE=0``, when
the installed SGLang is not a supported version, when SGLang's attention
registry does not import (a module SGLang needs is missing: the warning names
it), or when SGLang's internals it relies on have moved. It never raises, and
calling it again is a no-op. It must not initialise CUDA: SGLang loads
plugins before it picks the GPU.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Callable, Optional

from . import __version__, dispatch
from .sglang_backend import (
    BACKEND_NAME,
    SUPPORTED_SGLANG_VERSIONS,
    SWITCH_ENV,
    create_backend,
    flag_errors,
    sglang_version,
    sparse_enabled,
)

logger = logging.getLogger(__name__)

PLUGIN_NAME = "dsv4_sparse"  # the entry-point name SGLANG_PLUGINS filters on
REGISTRY_MODULE = "sglang.srt.layers.attention.attention_registry"
BACKEND_MODULE = "sglang.srt.layers.attention.deepseek_v4_backend"
# Set on the module by patches/0001-dsv4-sparse-backend.patch.
PATCH_MARKER = "DSV4_SPARSE_PATCHED"
_FACTORY_FLAG = "_dsv4_sparse_factory"


def make_factory(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A ``"dsv4"`` factory that builds our backend, ``original(runner)`` where it does not apply."""

    def create_dsv4_sparse_backend(runner):
        return create_backend(runner, fallback=original)

    setattr(create_dsv4_sparse_backend, _FACTORY_FLAG, True)
    create_dsv4_sparse_backend.original = original
    return create_dsv4_sparse_backend


def original_factory() -> Optional[Callable[[Any], Any]]:
    """SGLang's own ``"dsv4"`` factory (None when the registry cannot be read)."""
    try:
        from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS
    except Exception:
        return None
    factory = ATTENTION_BACKENDS.get("dsv4")
    return getattr(factory, "original", factory)


def _kernels_line() -> str:
    """``dispatch.describe()`` without initialising CUDA (plugins load before the GPU is chosen)."""
    try:
        import torch

        if torch.cuda.is_available() and not torch.cuda.is_initialized():
            return f"kernels={dispatch.requested_kernels()}: chosen per GPU when the backend is built"
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        return dispatch.describe(device)
    except Exception as exc:  # e.g. a bad SGLANG_DSV4_SPARSE_KERNELS value
        return f"kernels: {exc}"


def install() -> bool:
    """Route SGLang's ``"dsv4"`` attention backend to this package. Returns whether it is routed."""
    if flag_errors():  # each bad flag already logged as one line naming it and its allowed values
        return False
    if not sparse_enabled():
        logger.info("sglang-dsv4-sparse: %s=0, SGLang's dsv4 attention backend left as it is", SWITCH_ENV)
        return False
    version = sglang_version()
    if version not in SUPPORTED_SGLANG_VERSIONS:
        logger.warning(
            "sglang-dsv4-sparse %s supports SGLang %s, found %s: SGLang left untouched",
            __version__, " / ".join(SUPPORTED_SGLANG_VERSIONS), version,
        )
        return False
    try:
        import sglang.srt.layers.attention.attention_registry as registry

        backends = registry.ATTENTION_BACKENDS
        current = backends["dsv4"]
        if importlib.util.find_spec(BACKEND_MODULE) is None:
            raise ImportError(f"no module {BACKEND_MODULE}")
    except Exception as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and missing.split(".")[0] != "sglang":
            # SGLang is there but one of its own dependencies is not: not a move.
            logger.warning(
                "sglang-dsv4-sparse: SGLang's attention registry does not import: module %r is missing "
                "(%s: %s); install it: SGLang left untouched",
                missing, type(exc).__name__, exc,
            )
        else:
            logger.warning(
                "sglang-dsv4-sparse: SGLang's internals moved (%s: %s): SGLang left untouched",
                type(exc).__name__, exc,
            )
        return False
    if getattr(current, _FACTORY_FLAG, False):
        return True  # installed already in this process
    if getattr(registry, PATCH_MARKER, False):
        logger.info(
            "sglang-dsv4-sparse %s: SGLang is patched to build %s already (%s)",
            __version__, BACKEND_NAME, _kernels_line(),
        )
        return True
    backends["dsv4"] = make_factory(current)
    logger.info(
        "sglang-dsv4-sparse %s: dsv4 attention backend -> %s (%s)", __version__, BACKEND_NAME, _kernels_line()
    )
    return True
