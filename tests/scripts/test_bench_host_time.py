"""scripts/bench_host_time.py runs end to end: on a GPU machine in its GPU mode, elsewhere in its CPU
mode (interpreter, tiny shapes); 2 calls a row."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_times_every_layer_call(tmp_path):
    out = tmp_path / "host.json"
    # This tree's package: the script takes it from PYTHONPATH when that is set, so put the tree first
    # (the rest of the path may hold what the package imports, e.g. wheels carried to a GPU machine).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    mode = [] if torch.cuda.is_available() else ["--cpu"]
    done = subprocess.run(
        [sys.executable, "scripts/bench_host_time.py", *mode, "--iters", "2", "--label", "smoke", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("not meaningful" in done.stdout) == bool(mode)
    payload = json.loads(out.read_text())
    assert payload["header"]["label"] == "smoke" and payload["header"]["api"] == "KernelChoice"
    assert Path(payload["header"]["package"]) == ROOT
    calls = [row["call"] for row in payload["rows"]]
    assert calls == [f"{kind} C{ratio}" for kind in ("prefill", "decode") for ratio in (0, 4, 128)]
    assert all(row["iters"] == 2 and 0 < row["median_us"] <= row["p90_us"] for row in payload["rows"])
