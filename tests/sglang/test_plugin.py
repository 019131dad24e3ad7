"""The ``dsv4_sparse`` plugin: SGLang's load_plugins() installs our "dsv4" factory, and only then."""

import logging
import sys
import types

import pytest

pytest.importorskip("sglang")

from sglang_dsv4_sparse import plugin  # noqa: E402
from sglang_dsv4_sparse.sglang_backend import BACKEND_NAME, backend_class  # noqa: E402


@pytest.fixture
def registry(monkeypatch):
    """SGLang's attention registry with its own "dsv4" factory, restored after the test;
    load_plugins() may run again."""
    import sglang.srt.layers.attention.attention_registry as reg
    import sglang.srt.plugins as plugins

    current = reg.ATTENTION_BACKENDS["dsv4"]
    monkeypatch.setitem(reg.ATTENTION_BACKENDS, "dsv4", getattr(current, "original", current))
    monkeypatch.setattr(plugins, "_plugins_loaded", False)
    monkeypatch.delenv("SGLANG_PLUGINS", raising=False)
    monkeypatch.delenv("SGLANG_DSV4_SPARSE", raising=False)
    return reg


def _entry_point_registered() -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == "dsv4_sparse" for ep in entry_points(group="sglang.srt.plugins"))


# load_plugins() finds the plugin through the installed distribution's entry point.
needs_entry_point = pytest.mark.skipif(
    not _entry_point_registered(), reason="sglang-dsv4-sparse is not pip-installed here (no sglang.srt.plugins entry point)"
)


def _ours(factory) -> bool:
    return bool(getattr(factory, "_dsv4_sparse_factory", False))


@needs_entry_point
def test_load_plugins_installs_our_factory(registry):
    from sglang.srt.plugins import load_plugins

    sglang_factory = registry.ATTENTION_BACKENDS["dsv4"]
    load_plugins()
    factory = registry.ATTENTION_BACKENDS["dsv4"]
    assert _ours(factory) and factory.original is sglang_factory
    assert sglang_factory.__module__ == registry.__name__


@needs_entry_point
@pytest.mark.parametrize("whitelist, installed", [("other_plugin", False), ("other_plugin,dsv4_sparse", True)])
def test_sglang_plugins_whitelist_filters_by_our_name(registry, monkeypatch, whitelist, installed):
    from sglang.srt.plugins import load_plugins

    monkeypatch.setenv("SGLANG_PLUGINS", whitelist)
    load_plugins()
    assert _ours(registry.ATTENTION_BACKENDS["dsv4"]) is installed


def test_switched_off_leaves_sglang_alone(registry, monkeypatch):
    from sglang.srt.plugins import load_plugins

    sglang_factory = registry.ATTENTION_BACKENDS["dsv4"]
    monkeypatch.setenv("SGLANG_DSV4_SPARSE", "0")
    load_plugins()
    assert registry.ATTENTION_BACKENDS["dsv4"] is sglang_factory


def test_unsupported_version_warns_and_leaves_sglang_alone(registry, monkeypatch, caplog):
    sglang_factory = registry.ATTENTION_BACKENDS["dsv4"]
    monkeypatch.setattr(plugin, "sglang_version", lambda: "0.5.22")
    with caplog.at_level(logging.INFO, logger="sglang_dsv4_sparse"):
        assert plugin.install() is False
    assert registry.ATTENTION_BACKENDS["dsv4"] is sglang_factory
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "0.5.22" in warnings[0].getMessage() and "0.5.23" in warnings[0].getMessage()


def test_moved_internals_warn_instead_of_crashing(registry, monkeypatch, caplog):
    monkeypatch.delitem(registry.ATTENTION_BACKENDS, "dsv4")
    with caplog.at_level(logging.WARNING, logger="sglang_dsv4_sparse"):
        assert plugin.install() is False
    assert "dsv4" not in registry.ATTENTION_BACKENDS
    assert any("internals moved" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.undo()  # registry back, now without the backend module
    monkeypatch.setattr(plugin, "BACKEND_MODULE", "sglang.srt.layers.attention.no_such_backend")
    with caplog.at_level(logging.WARNING, logger="sglang_dsv4_sparse"):
        assert plugin.install() is False
    assert not _ours(registry.ATTENTION_BACKENDS["dsv4"])
    assert any("no_such_backend" in r.getMessage() for r in caplog.records)


def test_missing_dependency_is_named_not_taken_for_moved_internals(registry, monkeypatch, caplog):
    # The registry's import fails on a module SGLang needs (torchvision, say): the warning names it.
    import sglang.srt.layers.attention as attention_package

    class Unimportable(types.ModuleType):
        def __getattr__(self, name):
            raise ModuleNotFoundError("No module named 'torchvision'", name="torchvision")

    broken = Unimportable(registry.__name__)
    monkeypatch.setitem(sys.modules, registry.__name__, broken)
    monkeypatch.setattr(attention_package, "attention_registry", broken)
    with caplog.at_level(logging.WARNING, logger="sglang_dsv4_sparse"):
        assert plugin.install() is False
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert "module 'torchvision' is missing" in messages[0] and "internals moved" not in messages[0]


def test_install_is_idempotent_and_logs_one_info_line(registry, caplog):
    with caplog.at_level(logging.INFO, logger="sglang_dsv4_sparse"):
        assert plugin.install() is True
        first = registry.ATTENTION_BACKENDS["dsv4"]
        assert plugin.install() is True
    assert registry.ATTENTION_BACKENDS["dsv4"] is first and _ours(first)
    assert not _ours(first.original)
    lines = [r.getMessage() for r in caplog.records if r.name == plugin.logger.name]
    assert len(lines) == 1 and BACKEND_NAME in lines[0] and "kernels=" in lines[0]


def test_patched_sglang_is_left_alone(registry, monkeypatch):
    sglang_factory = registry.ATTENTION_BACKENDS["dsv4"]
    monkeypatch.setattr(registry, plugin.PATCH_MARKER, True, raising=False)
    assert plugin.install() is True
    assert registry.ATTENTION_BACKENDS["dsv4"] is sglang_factory


def test_factory_builds_our_backend_and_falls_back(dsv4_env, registry, monkeypatch):
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    runner = dsv4_env().runner
    assert plugin.install() is True
    factory = registry.ATTENTION_BACKENDS["dsv4"]
    assert type(factory(runner)) is backend_class()
    # SGLang's own factory builds SGLang's class for what we leave alone.
    monkeypatch.setenv("SGLANG_DSV4_SPARSE", "0")
    assert type(factory(runner)) is DeepseekV4AttnBackend
    monkeypatch.delenv("SGLANG_DSV4_SPARSE")
    monkeypatch.setattr(runner, "is_draft_worker", True)
    assert type(factory(runner)) is DeepseekV4AttnBackend


@pytest.mark.parametrize("name, value", [
    ("SGLANG_DSV4_SPARSE", "maybe"), ("SGLANG_DSV4_SPARSE_KERNELS", "bogus"),
    ("SGLANG_DSV4_SPARSE_PREFILL_ROUTE", "fastest"), ("SGLANG_DSV4_SPARSE_CHECK_BOUNDS", "2"),
])
def test_a_bad_flag_value_is_one_line_and_sglang_stays(registry, monkeypatch, caplog, name, value):
    from sglang_dsv4_sparse import sglang_gating

    monkeypatch.setattr(sglang_gating, "_logged", set())
    monkeypatch.setenv(name, value)
    sglang_factory = registry.ATTENTION_BACKENDS["dsv4"]
    with caplog.at_level(logging.INFO):
        assert plugin.install() is False
        assert plugin.install() is False
    assert registry.ATTENTION_BACKENDS["dsv4"] is sglang_factory
    lines = [r.getMessage() for r in caplog.records if "sglang-dsv4-sparse" in r.getMessage()]
    assert len(lines) == 1 and name in lines[0] and "use one of" in lines[0], lines
    assert sglang_gating.backend_fallback_reason(types.SimpleNamespace()).startswith(name)
