"""patches/ applies to the installed SGLang 0.5.23 files (on a copy) and wires the same backend."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sglang")

from sglang_dsv4_sparse.sglang_backend import backend_class  # noqa: E402

if shutil.which("patch") is None or shutil.which("bash") is None:
    pytest.skip("needs bash and GNU patch", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "apply_patches.sh"
PATCH = REPO / "patches" / "0001-dsv4-sparse-backend.patch"
REGISTRY = Path("sglang/srt/layers/attention/attention_registry.py")
MARKER = "DSV4_SPARSE_PATCHED = True"


def _installed_site() -> Path:
    package_dir = Path(importlib.util.find_spec("sglang").submodule_search_locations[0])
    return package_dir.parent


@pytest.fixture
def site(tmp_path) -> Path:
    """A copy of the installed SGLang files the patches touch (pristine), plus its version files."""
    src = _installed_site()
    dst = tmp_path / "site-packages"
    for rel in (REGISTRY, Path("sglang/__init__.py"), Path("sglang/_version.py")):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    if MARKER in (dst / REGISTRY).read_text():  # the installed copy was patched: undo it on the copy
        subprocess.run(["patch", "-p1", "-R", "-s", "-i", str(PATCH)], cwd=dst, check=True)
    return dst


def _run(*args):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_check_then_apply_then_already_applied(site):
    pristine = (site / REGISTRY).read_text()
    check = _run("--check", site)
    assert check.returncode == 0, check.stderr
    assert "applies cleanly" in check.stdout and (site / REGISTRY).read_text() == pristine
    applied = _run(site)
    assert applied.returncode == 0, applied.stderr
    text = (site / REGISTRY).read_text()
    assert MARKER in text and "from sglang_dsv4_sparse.sglang_backend import create_backend" in text
    compile(text, str(site / REGISTRY), "exec")
    again = _run("--check", site)
    assert again.returncode == 5 and "already applied" in again.stderr


def test_clear_errors(site, tmp_path):
    assert _run().returncode == 2
    missing = _run(tmp_path / "nowhere")
    assert missing.returncode == 3 and "not a directory" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    no_sglang = _run(empty)
    assert no_sglang.returncode == 3 and "no sglang package" in no_sglang.stderr
    version_file = site / "sglang" / "_version.py"
    version_file.write_text(version_file.read_text().replace("'0.5.23'", "'0.5.22'"))
    wrong = _run("--check", site)
    assert wrong.returncode == 4 and "0.5.22" in wrong.stderr


def test_modified_file_is_refused(site):
    path = site / REGISTRY
    path.write_text(path.read_text().replace("backend = create_deepseek_v4_attn_backend(runner)", "backend = None"))
    result = _run("--check", site)
    assert result.returncode == 6 and "does not apply cleanly" in result.stderr


def test_patched_registry_builds_our_backend(site, dsv4_env, monkeypatch):
    from sglang.srt.layers.attention.deepseek_v4_backend import DeepseekV4AttnBackend

    assert _run(site).returncode == 0
    spec = importlib.util.spec_from_file_location("dsv4_sparse_patched_registry", site / REGISTRY)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert module.DSV4_SPARSE_PATCHED is True
    runner = dsv4_env().runner
    assert type(module.ATTENTION_BACKENDS["dsv4"](runner)) is backend_class()
    monkeypatch.setenv("SGLANG_DSV4_SPARSE", "0")
    assert type(module.ATTENTION_BACKENDS["dsv4"](runner)) is DeepseekV4AttnBackend
