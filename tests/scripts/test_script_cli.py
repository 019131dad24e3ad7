"""What every script in scripts/ does before its job: --help, and the exit status without a GPU;
and what bench_kernel_diff.py leaves behind.

Each script runs as a subprocess with a short timeout; none gets as far as
a real job (a GPU run, a server, a download), so each case takes seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_dsv4_sparse.benchmarking import EXIT_NO_GPU

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
PY_SCRIPTS = sorted(p.name for p in SCRIPTS.glob("*.py"))
# The _-prefixed ones are sourced, never run.
SH_SCRIPTS = sorted(p.name for p in SCRIPTS.glob("*.sh") if not p.name.startswith("_"))

# Need a GPU and stop without one.
GPU_PY_SCRIPTS = ["bench_attention.py", "bench_kernels.py", "bench_prefill_routes.py", "bench_sglang_ab.py",
                  "bench_sglang_verify.py",
                  "e2e_stack.py", "sglang_kit_matrix.py"]
GPU_SH_SCRIPTS = ["gpu_check.sh", "gpu_sglang_check.sh", "profile.sh", "serve.sh"]


def _env(tmp_path: Path, script: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "DSV4_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        OUT=str(tmp_path / "out"),  # a script that wrote its results would write them here
        CUDA_VISIBLE_DEVICES="",  # no GPU for torch, even on a GPU machine
        NVIDIA_SMI=str(tmp_path / "no-nvidia-smi"),  # nor for the shell scripts' check
    )
    if script.endswith(".sh"):
        # The wrappers look for SGLang before the GPU: a stub `sglang` command and package, whether
        # or not this environment has SGLang (their own tests are in test_wrapper_scripts.py).
        bin_dir, pylib = tmp_path / "bin", tmp_path / "pylib"
        (pylib / "sglang").mkdir(parents=True)
        (pylib / "sglang" / "__init__.py").write_text("")
        bin_dir.mkdir()
        for name, text in (("python", f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n'), ("sglang", "#!/bin/sh\n")):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        env.update(PYTHON=str(bin_dir / "python"), PYTHONPATH=str(pylib))
    return env


def _run(script: str, *args: str, env: dict, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [sys.executable] if script.endswith(".py") else ["bash"]
    return subprocess.run(
        [*command, str(SCRIPTS / script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_the_lists_cover_every_script():
    assert "cpu_demo.py" in PY_SCRIPTS and "serve.sh" in SH_SCRIPTS
    assert set(GPU_PY_SCRIPTS) <= set(PY_SCRIPTS) and set(GPU_SH_SCRIPTS) <= set(SH_SCRIPTS)


def test_one_no_gpu_status_for_shell_and_python():
    common = (SCRIPTS / "_common.sh").read_text()
    assert re.search(r"^DSV4_EXIT_NO_GPU=(\d+)$", common, re.M).group(1) == str(EXIT_NO_GPU)
    assert re.search(r"^DSV4_EXIT_USAGE=(\d+)$", common, re.M).group(1) == "2"
    assert EXIT_NO_GPU != 2  # argparse's usage error


@pytest.mark.parametrize("script", GPU_PY_SCRIPTS + GPU_SH_SCRIPTS)
def test_no_gpu_exit_status(script, tmp_path):
    res = _run(script, env=_env(tmp_path, script), cwd=tmp_path)
    assert res.returncode == EXIT_NO_GPU, res.stdout + res.stderr
    assert "no GPU visible" in res.stderr
    assert not (tmp_path / "out").exists()  # stopped before writing anything


@pytest.mark.parametrize("script", PY_SCRIPTS + SH_SCRIPTS)
def test_help_prints_usage_and_runs_nothing(script, tmp_path):
    env = _env(tmp_path, script)
    before = sorted(tmp_path.rglob("*"))
    # argparse answers -h as it does --help; the shell scripts parse both themselves.
    for flag in ("--help",) if script.endswith(".py") else ("--help", "-h"):
        res = _run(script, flag, env=env, cwd=tmp_path, timeout=30)
        assert res.returncode == 0, res.stderr
        # argparse's "usage: NAME.py ..."; the shell scripts' synopsis names scripts/NAME.sh.
        assert (f"usage: {script}" if script.endswith(".py") else f"scripts/{script}") in res.stdout, res.stdout
        assert not res.stdout.lstrip().startswith("#")  # the text of the header, not its comment marks
        assert len(res.stdout.splitlines()) < 80  # the usage, not a run's output
    assert sorted(tmp_path.rglob("*")) == before  # nothing written (OUT included)


def test_bench_kernel_diff_keeps_its_trace_only_with_keep(tmp_path):
    # The default trace is 1 GB: with --dir too it is deleted after the run unless --keep is given.
    env = _env(tmp_path, "bench_kernel_diff.py")
    trace_dir = tmp_path / "made" / "here"
    res = _run("bench_kernel_diff.py", "--size-mb", "0.01", "--dir", str(trace_dir), env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "kernel_diff A=B" in res.stdout
    assert not trace_dir.exists()  # the trace is gone, and the folder the run made for it

    trace_dir.mkdir(parents=True)
    (trace_dir / "other.txt").write_text("not the benchmark's")
    res = _run("bench_kernel_diff.py", "--size-mb", "0.01", "--dir", str(trace_dir), "--gzip", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [p.name for p in trace_dir.iterdir()] == ["other.txt"]

    res = _run("bench_kernel_diff.py", "--size-mb", "0.01", "--dir", str(trace_dir), "--keep", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    kept = trace_dir / "bench.pt.trace.json"
    assert kept.stat().st_size > 0 and f"kept {kept}" in res.stdout
