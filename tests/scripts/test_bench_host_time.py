"""scripts/bench_host_time.py runs end to end in its CPU mode (interpreter, tiny shapes, 2 calls a row)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_mode_times_every_layer_call(tmp_path):
    out = tmp_path / "host.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # this tree's package
    done = subprocess.run(
        [sys.executable, "scripts/bench_host_time.py", "--cpu", "--iters", "2", "--label", "smoke", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not meaningful" in done.stdout
    payload = json.loads(out.read_text())
    assert payload["header"]["label"] == "smoke" and payload["header"]["api"] == "KernelChoice"
    assert Path(payload["header"]["package"]) == ROOT
    calls = [row["call"] for row in payload["rows"]]
    assert calls == [f"{kind} C{ratio}" for kind in ("prefill", "decode") for ratio in (0, 4, 128)]
    assert all(row["iters"] == 2 and 0 < row["median_us"] <= row["p90_us"] for row in payload["rows"])
