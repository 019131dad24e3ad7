"""Import-time stand-ins for the GPU machine's SGLang run (test-only: never imported by the package).

* ``torchvision``: PyPI's wheel does not import beside the CPU torch, and only
  SGLang's multimodal modules want it at import time. The stand-in goes in
  after ``transformers`` has decided that torchvision is unavailable, so
  nothing uses it.

The GPU machine runs SGLang 0.5.23 from carried wheels on its own torch 2.11.
Two modules SGLang imports at import time are not there (stand-ins only where
CUDA is: on the CPU SGLang does not import them, and a stand-in could change
what it picks):

* ``sgl_kernel``: a 373 MB wheel built for torch 2.14. SGLang's quantization
  modules import it; the DSv4 attention path and its test kit never call it.
  The stand-in imports, and every function taken from it raises when called,
  so a code path that does need it fails loudly instead of computing garbage.
* ``IPython.display`` (IPython is not installed there): a no-op display.

:func:`install` adds each only when the real module does not import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types


class _Missing:
    """Any name taken from the ``sgl_kernel`` stand-in: importable, raises when used."""

    def __init__(self, qualname: str):
        self._qualname = qualname

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"{self._qualname} was called, but sgl_kernel is a test stand-in here "
            "(tests/sglang/stand_ins.py): this code path needs the real sgl_kernel"
        )

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(f"{self._qualname}.{name}")


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(f"{self.__name__}.{name}")


class _PackageStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``root`` and every ``root.*`` submodule as a stand-in module."""

    def __init__(self, root: str, fill=None, module_cls=None):
        self.root = root
        self.fill = fill
        self.module_cls = module_cls or _StandInModule

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.root or fullname.startswith(self.root + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = self.module_cls(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0+dsv4-test-stand-in"
        if self.fill is not None:
            self.fill(module)
        return module

    def exec_module(self, module):
        pass


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        return False


def _fill_ipython_display(module: types.ModuleType) -> None:
    def display(*args, **kwargs):
        return None

    class _Rich:
        def __init__(self, *args, **kwargs):
            pass

    module.display = display
    module.HTML = module.Markdown = module.Image = module.JSON = _Rich
    # No IPython shell is running: what the real get_ipython answers outside one. matplotlib asks
    # it whenever IPython is in sys.modules (found on the H200 when a test drew a chart after
    # the SGLang tests in the same process).
    module.get_ipython = lambda: None
    module.version_info = (8, 24, 0)  # an IPython that needs none of matplotlib's fixes for older ones


class _AnyName(_Missing):
    """A torchvision name: a class, function or enum member that does nothing."""

    def __call__(self, *args, **kwargs):
        return self


class _TorchvisionModule(_StandInModule):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyName(f"{self.__name__}.{name}")


def install() -> list:
    """Put each stand-in in place whose real module does not import; returns their names."""
    import torch

    added = []
    if not _importable("torchvision"):
        # transformers decides once, at import, whether torchvision is available.
        import transformers.utils.import_utils  # noqa: F401

        sys.meta_path.insert(0, _PackageStandIn("torchvision", module_cls=_TorchvisionModule))
        added.append("torchvision")
    if not torch.cuda.is_available():
        return added
    if not _importable("sgl_kernel"):
        sys.meta_path.insert(0, _PackageStandIn("sgl_kernel"))
        added.append("sgl_kernel")
    if not _importable("IPython.display"):
        sys.meta_path.insert(0, _PackageStandIn("IPython", fill=_fill_ipython_display))
        added.append("IPython.display")
    return added
