"""scripts/soak_sglang.py: its --help, the schedule it draws (--dry-run) and a tiny soak end to end.

The tiny soak runs in its CPU mode (Triton's interpreter, our backend against the package's dense
reference) where no GPU is visible, on both backends on a GPU machine; about 45 s on two CPU cores.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "scripts/soak_sglang.py"
HAVE_SGLANG = importlib.util.find_spec("sglang") is not None


def _run(*args, timeout=300):
    # This tree's package first on the path (the rest may hold what it imports, e.g. carried wheels).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_help_runs_nothing(tmp_path):
    done = _run("--help", "--json", str(tmp_path / "r.json"), timeout=60)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps to the terminal's width
    for option in ("--steps", "--seed", "--compare-every", "--max-seconds", "--max-drift-mb", "--quick", "--tiny"):
        assert option in text
    assert "(default 1.0: none beyond allocator rounding)" in text  # the drift limit is stated
    assert not (tmp_path / "r.json").exists()


def test_full_schedule_covers_the_issue():
    # The GPU soak's 2000 steps, drawn without running them: every kind of step the issue lists.
    done = _run("--dry-run", timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["steps"] == 2000 and set(report["heads"]) == {"8", "16", "64"}
    stats = report["coverage"]["stats"]
    assert all(stats[f"steps {mode}"] > 100 for mode in ("EXTEND", "MIXED", "DECODE", "TARGET_VERIFY", "DRAFT_EXTEND"))
    # Every verify step is followed by its draft extend; requests accept each count of the 4 draft tokens.
    assert stats["steps TARGET_VERIFY"] == stats["steps DRAFT_EXTEND"]
    assert all(stats[f"verified requests accepting {n} of 4"] > 100 for n in (1, 2, 3, 4))
    assert report["coverage"]["verify_batch_sizes"]["1"] > 0 and report["coverage"]["verify_batch_sizes"]["128"] > 0
    assert stats["extends with sparse prefill on"] and stats["extends with sparse prefill off"]
    for chunk in (8192, 16384, 32768):
        assert stats[f"arrived long (chunks of {chunk})"] > 0
    assert stats["long prompts prefilled"] > 20 and stats["long-prompt chunks"] > 100
    assert stats["first extends after a prefix hit"] > 100 and stats["finished"] > 1000
    assert stats["aborted mid-prefill"] > 0 and stats["aborted decoding"] > 0
    assert report["coverage"]["decode_batch_sizes"]["1"] > 0 and report["coverage"]["decode_batch_sizes"]["128"] > 0
    assert 131072 <= report["coverage"]["max_seq_len"] <= 131072 + 256


@pytest.mark.skipif(not HAVE_SGLANG, reason="SGLang is not installed")
def test_tiny_soak_reports(tmp_path):
    out = tmp_path / "soak.json"
    # Seed 2's six tiny steps: EXTEND, MIXED, DECODE, a verify and its draft extend, a chunked prompt, a prefix
    # hit, sparse prefill on and off; each compared.
    done = _run("--tiny", "--steps", "6", "--seed", "2", "--compare-every", "1", "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== soak_sglang" in done.stdout and "soak: OK" in done.stdout
    report = json.loads(out.read_text())
    assert report["ok"] and not report["failures"]
    assert report["steps_run"] == 6 and report["stopped_by"] == "steps"
    assert report["compared_steps"] == 6 and report["mismatches"] == 0 and report["worst_error"] <= 1
    assert report["nonfinite_steps"] == 0 and report["errors"] == 0
    assert report["fallbacks"]["steps_handed_to_sglang"] == 0 and report["fallbacks"]["calls"] == 0
    # Every step planned by our backend (on a GPU the warm-up's envelope steps too).
    assert sum(report["routes"]["plan"].values()) == 6 + report["warmup_steps"]
    assert report["routes"]["plan"]["verify"] >= 2  # the verify step and its draft extend, on the verify kernel
    stats = report["coverage"]["stats"]
    assert {k for k in stats if k.startswith("steps ")} == {
        "steps EXTEND", "steps MIXED", "steps DECODE", "steps TARGET_VERIFY", "steps DRAFT_EXTEND"}
    assert stats["first extends after a prefix hit"] and stats["long-prompt chunks"] >= 2
    memory = report["memory"]
    if report["config"]["device"] == "cpu":
        assert report["config"]["oracle"] == "reference" and memory["drift_mb"] == "n/a"
    else:
        assert report["config"]["oracle"] == "sglang" and report["warmup_steps"] > 0
        assert memory["drift_mb"] <= report["config"]["max_drift_mb"]
    assert report["elapsed_s"] > 0 and report["header"]["sglang"] == "0.5.23"


def test_without_a_gpu_it_stops_with_the_no_gpu_status(tmp_path):
    from sglang_dsv4_sparse import benchmarking

    env_out = tmp_path / "out"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OUT=str(env_out),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, SCRIPT, "--steps", "3"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == benchmarking.EXIT_NO_GPU, done.stdout + done.stderr
    assert f"{benchmarking.EXIT_NO_GPU} no CUDA GPU visible" in " ".join(_run("--help", timeout=60).stdout.split())
    assert "no GPU visible: needs a CUDA GPU (or --tiny" in done.stderr
    assert not env_out.exists()  # nothing written
