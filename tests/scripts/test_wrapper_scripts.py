"""The serve / profile / eval wrappers, run against stubs.

A stub ``sglang`` executable, a stub ``nvidia-smi`` and a stub ``sglang``
Python package (send_one, run_eval, and the attention registry serve.sh
imports) record what they were called with; a
tiny HTTP server on 127.0.0.1 plays the SGLang server for the reachability
check.  No SGLang, GPU or network needed.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
WRAPPERS = ["serve.sh", "profile.sh", "eval_gsm8k.sh"]
MODEL = "deepseek-ai/DeepSeek-V4-Flash"

STUB_SGLANG = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$STUB_RECORD/sglang.argv"
env > "$STUB_RECORD/sglang.env"
exit "${STUB_EXIT:-0}"
"""

# The same stub as a Python script (its #! line is added where it is written).
STUB_SGLANG_PY = """import os, sys
record = os.environ["STUB_RECORD"]
with open(os.path.join(record, "sglang.argv"), "w") as fh:
    fh.write("".join(arg + "\\n" for arg in sys.argv[1:]))
with open(os.path.join(record, "sglang.env"), "w") as fh:
    fh.write("".join(f"{k}={v}\\n" for k, v in os.environ.items()))
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""

STUB_NVIDIA_SMI = """#!/usr/bin/env bash
for ((i = 0; i < ${STUB_GPUS:-4}; i++)); do
  echo "GPU $i: NVIDIA H200 (UUID: GPU-stub-$i)"
done
"""

STUB_MODULE = """
import json, os, sys
KEYS = ("SGLANG_DSV4_SPARSE", "SGLANG_OPT_FLASHMLA_SPARSE_PREFILL",
        "SGLANG_TORCH_PROFILER_DIR", "SGLANG_PLUGINS")
record = {{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in KEYS}}}}
with open(os.path.join(os.environ["STUB_RECORD"], "{name}.json"), "w") as fh:
    json.dump(record, fh)
print("{name} stub output: Accuracy: 0.950")
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class Stubs:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.pylib = root / "pylib"
        self.record = root / "record"
        self.work = root / "work"
        attention = self.pylib / "sglang" / "srt" / "layers" / "attention"
        for d in (self.bin, self.pylib / "sglang" / "test", attention, self.record, self.work):
            d.mkdir(parents=True)
        _write_exe(self.bin / "sglang", STUB_SGLANG)
        # The scripts' Python runs without site-packages (-S): only the stubs on
        # PYTHONPATH are importable, whether or not the test venv has SGLang or
        # this package's entry point installed.
        _write_exe(self.bin / "python-isolated", f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
        _write_exe(self.bin / "nvidia-smi", STUB_NVIDIA_SMI)
        (self.pylib / "sglang" / "__init__.py").write_text("")
        (self.pylib / "sglang" / "test" / "__init__.py").write_text("")
        for package in (attention.parent.parent, attention.parent, attention):
            (package / "__init__.py").write_text("")
        self.registry = attention / "attention_registry.py"
        self.registry.write_text("ATTENTION_BACKENDS = {}\n")
        for name in ("send_one", "run_eval"):
            (self.pylib / "sglang" / "test" / f"{name}.py").write_text(STUB_MODULE.format(name=name))
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SGLANG_", "DSV4_", "CUDA_VISIBLE"))
            and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        self.env.update(
            PATH=f"{self.bin}:/usr/bin:/bin",
            PYTHONPATH=str(self.pylib),
            PYTHON=str(self.bin / "python-isolated"),
            STUB_RECORD=str(self.record),
            DSV4_SERVER_TIMEOUT="2",
        )

    def run(self, script: str, *args: str, scripts: Path = SCRIPTS, **env: str) -> subprocess.CompletedProcess:
        full_env = dict(self.env)
        for key, value in env.items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        return subprocess.run(
            ["bash", str(scripts / script), *args],
            env=full_env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def sglang_call(self):
        argv = (self.record / "sglang.argv").read_text().splitlines()
        env = dict(
            line.split("=", 1)
            for line in (self.record / "sglang.env").read_text().splitlines()
            if "=" in line
        )
        return argv, env

    def module_call(self, name: str) -> dict:
        return json.loads((self.record / f"{name}.json").read_text())

    def nothing_ran(self) -> bool:
        return not any(self.record.iterdir())


@pytest.fixture
def stubs(tmp_path) -> Stubs:
    return Stubs(tmp_path)


class _Handler(http.server.BaseHTTPRequestHandler):
    ok_paths = ("/model_info",)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.seen.append(self.path)
        code = 200 if self.path in self.server.ok_paths else 404
        body = b'{"model_path": "stub"}' if code == 200 else b"{}"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _start_server(ok_paths):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.seen = []
    server.ok_paths = ok_paths
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def server():
    srv, thread = _start_server(("/model_info",))
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def free_port() -> str:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _port(srv) -> str:
    return str(srv.server_address[1])


# --------------------------------------------------------------------------
# All wrappers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("script", WRAPPERS + ["_common.sh"])
def test_scripts_parse_and_are_executable(script):
    path = SCRIPTS / script
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    if script != "_common.sh":
        assert os.access(path, os.X_OK), f"{script} is not executable"


@pytest.mark.parametrize(
    "script, options",
    [
        ("serve.sh", ["--model-path", "--tp", "--chunked-prefill-size", "--host", "--port", "--baseline", "--dry-run"]),
        ("profile.sh", ["--host", "--port", "--input-len", "--output-dir", "--baseline", "--dry-run"]),
        ("eval_gsm8k.sh", ["--host", "--port", "--num-examples", "--num-shots", "--baseline", "--dry-run"]),
    ],
)
def test_help(stubs, script, options):
    res = stubs.run(script, "--help")
    assert res.returncode == 0
    for opt in options + ["-- "]:
        assert opt in res.stdout, f"{script} --help does not mention {opt}"
    assert "Exit status" in res.stdout
    assert stubs.nothing_ran()


@pytest.mark.parametrize("script", WRAPPERS)
def test_usage_errors(stubs, script):
    res = stubs.run(script, "--bogus")
    assert res.returncode == 2
    assert "unknown option '--bogus'" in res.stderr
    res = stubs.run(script, "--port")
    assert res.returncode == 2 and "option --port needs a value" in res.stderr
    res = stubs.run(script, "--port", "http")
    assert res.returncode == 2 and "option --port needs an integer" in res.stderr
    assert stubs.nothing_ran()


# --------------------------------------------------------------------------
# serve.sh
# --------------------------------------------------------------------------


def test_serve_defaults_plugin_on(stubs):
    res = stubs.run("serve.sh")
    assert res.returncode == 0, res.stderr
    argv, env = stubs.sglang_call()
    assert argv == [
        "serve", "--model-path", MODEL, "--tp-size", "4", "--chunked-prefill-size", "32768",
        "--host", "127.0.0.1", "--port", "30000",
    ]
    assert env["SGLANG_DSV4_SPARSE"] == "1"
    assert env["SGLANG_OPT_FLASHMLA_SPARSE_PREFILL"] == "1"
    assert "SGLANG_PLUGINS" not in env
    # The venv running the tests has no plugin entry point installed.
    assert "plugin 'dsv4_sparse' is not installed" in res.stderr


def test_serve_baseline_options_and_passthrough(stubs):
    res = stubs.run(
        "serve.sh", "--baseline", "--model-path", "/models/v4", "--tp=8",
        "--chunked-prefill-size", "8192", "--host", "0.0.0.0", "--port", "31000",
        "--", "--mem-fraction-static", "0.8", "two words", STUB_GPUS="8",
    )
    assert res.returncode == 0, res.stderr
    argv, env = stubs.sglang_call()
    assert argv == [
        "serve", "--model-path", "/models/v4", "--tp-size", "8", "--chunked-prefill-size", "8192",
        "--host", "0.0.0.0", "--port", "31000", "--mem-fraction-static", "0.8", "two words",
    ]
    assert env["SGLANG_DSV4_SPARSE"] == "0"
    assert env["SGLANG_OPT_FLASHMLA_SPARSE_PREFILL"] == "1"
    assert "not installed" not in res.stderr  # no plugin check for the baseline


def test_serve_overrides_inherited_switch_and_extends_whitelist(stubs):
    res = stubs.run("serve.sh", SGLANG_DSV4_SPARSE="0", SGLANG_PLUGINS="other")
    assert res.returncode == 0, res.stderr
    _, env = stubs.sglang_call()
    assert env["SGLANG_DSV4_SPARSE"] == "1"
    assert env["SGLANG_PLUGINS"] == "other,dsv4_sparse"

    res = stubs.run("serve.sh", SGLANG_PLUGINS="other, dsv4_sparse")
    _, env = stubs.sglang_call()
    assert env["SGLANG_PLUGINS"] == "other, dsv4_sparse"

    res = stubs.run("serve.sh", "--baseline", SGLANG_PLUGINS="other")
    _, env = stubs.sglang_call()
    assert env["SGLANG_PLUGINS"] == "other"
    assert env["SGLANG_DSV4_SPARSE"] == "0"


def test_serve_propagates_exit_status(stubs):
    res = stubs.run("serve.sh", STUB_EXIT="7")
    assert res.returncode == 7


def test_serve_dry_run_prints_without_running(stubs):
    res = stubs.run("serve.sh", "--dry-run", "--baseline", "--", "--x", "it's", PATH="/usr/bin:/bin")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "export SGLANG_DSV4_SPARSE=0" in lines
    assert "export SGLANG_OPT_FLASHMLA_SPARSE_PREFILL=1" in lines
    # The sglang next to $PYTHON (the stubs' bin/), though PATH has none.
    assert lines[-1] == (
        f"{stubs.bin}/sglang serve --model-path {MODEL} --tp-size 4 --chunked-prefill-size 32768 "
        "--host 127.0.0.1 --port 30000 --x 'it'\\''s'"
    )
    (stubs.bin / "sglang").unlink()
    res = stubs.run("serve.sh", "--dry-run", PATH="/usr/bin:/bin")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1].startswith("sglang serve --model-path")
    assert stubs.nothing_ran()


def test_serve_without_sglang(stubs):
    (stubs.bin / "sglang").unlink()
    res = stubs.run("serve.sh")
    assert res.returncode == 3
    assert f"SGLang is not installed: no 'sglang' next to {stubs.bin}/python-isolated nor on PATH" in res.stderr
    assert "pip install sglang-dsv4-sparse" not in res.stderr  # not on PyPI


def test_serve_runs_the_checkouts_venv(stubs):
    # SGLang installed in the checkout's .venv and nowhere on PATH (issue #23): without PYTHON,
    # serve.sh runs .venv/bin/sglang and checks the import with .venv/bin/python.
    checkout = stubs.root / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("_common.sh", "serve.sh"):
        (checkout / "scripts" / name).write_text((SCRIPTS / name).read_text())
    venv_bin = checkout / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    _write_exe(venv_bin / "python", f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    (stubs.bin / "sglang").rename(venv_bin / "sglang")
    res = stubs.run("serve.sh", scripts=checkout / "scripts", PYTHON=None, PATH="/usr/bin:/bin",
                    NVIDIA_SMI=str(stubs.bin / "nvidia-smi"))
    assert res.returncode == 0, res.stderr
    assert stubs.sglang_call()[0][:3] == ["serve", "--model-path", MODEL]
    assert f"{venv_bin}/sglang serve" in res.stderr
    assert f"plugin 'dsv4_sparse' is not installed for {venv_bin}/python" in res.stderr


def test_serve_checks_the_interpreter_behind_paths_sglang(stubs):
    # No sglang next to $PYTHON: the one on PATH runs, and its #! line names the interpreter checked.
    other = stubs.root / "other" / "bin"
    other.mkdir(parents=True)
    (stubs.bin / "sglang").rename(other / "sglang")
    res = stubs.run("serve.sh", PYTHON="/nonexistent/python", PATH=f"{other}:{stubs.bin}:/usr/bin:/bin")
    assert res.returncode == 3 and "Python interpreter '/nonexistent/python' not found" in res.stderr
    _write_exe(other / "sglang", f"#!{stubs.bin}/python-isolated\n" + STUB_SGLANG_PY)
    res = stubs.run("serve.sh", "--baseline", PYTHON="/nonexistent/python", PATH=f"{other}:{stubs.bin}:/usr/bin:/bin")
    assert res.returncode == 0, res.stderr
    assert stubs.sglang_call()[0][0] == "serve"


def test_serve_names_the_module_sglang_misses(stubs):
    # SGLang is there but does not import (a dependency of its own is missing), GPU check skipped:
    # the error names the missing module, instead of the server failing later.
    stubs.registry.write_text("import torchvision_for_this_test\n")
    res = stubs.run("serve.sh", NVIDIA_SMI=str(stubs.bin / "no-nvidia-smi"), DSV4_SKIP_GPU_CHECK="1")
    assert res.returncode == 3
    assert "cannot import sglang.srt.layers.attention.attention_registry" in res.stderr
    assert "module 'torchvision_for_this_test' is missing" in res.stderr
    assert "internals moved" not in res.stderr
    assert stubs.nothing_ran()
    stubs.registry.write_text("raise RuntimeError('no CUDA here')\n")
    res = stubs.run("serve.sh", "--baseline", DSV4_SKIP_GPU_CHECK="1")
    assert res.returncode == 3 and "RuntimeError: no CUDA here" in res.stderr
    assert stubs.nothing_ran()


def test_serve_gpu_checks(stubs):
    res = stubs.run("serve.sh", STUB_GPUS="0")
    assert res.returncode == 4 and "nvidia-smi lists none" in res.stderr
    res = stubs.run("serve.sh", STUB_GPUS="2")
    assert res.returncode == 4 and "--tp 4 needs 4 GPUs but only 2 are visible" in res.stderr
    res = stubs.run("serve.sh", CUDA_VISIBLE_DEVICES="0,1,2")
    assert res.returncode == 4 and "only 3 are visible" in res.stderr
    assert stubs.nothing_ran()
    # A machine with a real nvidia-smi on /usr/bin still has none under this name.
    res = stubs.run("serve.sh", NVIDIA_SMI=str(stubs.bin / "no-nvidia-smi"))
    assert res.returncode == 4 and "nvidia-smi not found" in res.stderr
    assert "DSV4_SKIP_GPU_CHECK=1" in res.stderr
    assert stubs.nothing_ran()
    res = stubs.run("serve.sh", NVIDIA_SMI=str(stubs.bin / "no-nvidia-smi"), DSV4_SKIP_GPU_CHECK="1")
    assert res.returncode == 0, res.stderr
    assert stubs.sglang_call()[0][0] == "serve"


# --------------------------------------------------------------------------
# profile.sh
# --------------------------------------------------------------------------


def test_profile_plugin_on(stubs, server):
    res = stubs.run("profile.sh", "--port", _port(server), STUB_GPUS="1")
    assert res.returncode == 0, res.stderr
    call = stubs.module_call("send_one")
    assert call["argv"] == [
        "--host", "127.0.0.1", "--port", _port(server), "--batch-size", "1",
        "--random-input-len", "131072", "--profile", "--profile-by-stage",
    ]
    out_dir = stubs.work / "profiles" / "dsv4_sparse"
    assert call["env"] == {
        "SGLANG_DSV4_SPARSE": "1",
        "SGLANG_OPT_FLASHMLA_SPARSE_PREFILL": "1",
        "SGLANG_TORCH_PROFILER_DIR": str(out_dir),
        "SGLANG_PLUGINS": None,
    }
    assert out_dir.is_dir()
    assert "/model_info" in server.seen
    assert "dsv4-kernel-diff profiles/baseline profiles/dsv4_sparse" in res.stderr


def test_profile_baseline_output_dir_and_passthrough(stubs, server):
    res = stubs.run(
        "profile.sh", "--baseline", "--port", _port(server), "--input-len", "4096",
        "--output-dir", "runs/a", "--", "--profile-steps", "3", DSV4_SKIP_GPU_CHECK="1",
    )
    assert res.returncode == 0, res.stderr
    call = stubs.module_call("send_one")
    assert call["argv"][-4:] == ["--profile", "--profile-by-stage", "--profile-steps", "3"]
    assert call["argv"][call["argv"].index("--random-input-len") + 1] == "4096"
    assert call["env"]["SGLANG_DSV4_SPARSE"] == "0"
    assert call["env"]["SGLANG_OPT_FLASHMLA_SPARSE_PREFILL"] == "1"
    assert call["env"]["SGLANG_TORCH_PROFILER_DIR"] == str(stubs.work / "runs" / "a")

    res = stubs.run("profile.sh", "--baseline", "--port", _port(server), "--dry-run")
    assert f"export SGLANG_TORCH_PROFILER_DIR={stubs.work}/profiles/baseline" in res.stdout


def test_profile_falls_back_to_health(stubs):
    srv, thread = _start_server(("/health",))
    try:
        res = stubs.run("profile.sh", "--port", _port(srv), DSV4_SKIP_GPU_CHECK="1")
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
    assert res.returncode == 0, res.stderr
    assert srv.seen == ["/model_info", "/health"]


def test_profile_fail_fast(stubs, free_port):
    res = stubs.run("profile.sh", "--port", free_port, DSV4_SKIP_GPU_CHECK="1")
    assert res.returncode == 5
    assert f"no SGLang server reachable at http://127.0.0.1:{free_port}" in res.stderr

    res = stubs.run("profile.sh", "--port", free_port, STUB_GPUS="0")
    assert res.returncode == 4 and "no GPU visible" in res.stderr

    res = stubs.run("profile.sh", "--port", free_port, PYTHONPATH="")
    assert res.returncode == 3 and 'import sglang' in res.stderr

    res = stubs.run("profile.sh", PYTHON="/nonexistent/python")
    assert res.returncode == 3 and "/nonexistent/python" in res.stderr
    assert stubs.nothing_ran()


def test_profile_propagates_exit_status(stubs, server):
    res = stubs.run("profile.sh", "--port", _port(server), DSV4_SKIP_GPU_CHECK="1", STUB_EXIT="9")
    assert res.returncode == 9


# --------------------------------------------------------------------------
# eval_gsm8k.sh
# --------------------------------------------------------------------------


def test_eval_defaults_and_log(stubs, server):
    # An HTTP client: no GPU check, so no nvidia-smi is needed.
    (stubs.bin / "nvidia-smi").unlink()
    res = stubs.run("eval_gsm8k.sh", "--port", _port(server))
    assert res.returncode == 0, res.stderr
    call = stubs.module_call("run_eval")
    assert call["argv"] == [
        "--eval-name", "gsm8k", "--num-examples", "1319", "--num-shots", "64",
        "--host", "127.0.0.1", "--port", _port(server),
    ]
    assert call["env"]["SGLANG_DSV4_SPARSE"] == "1"
    assert call["env"]["SGLANG_OPT_FLASHMLA_SPARSE_PREFILL"] == "1"
    log = stubs.work / "eval_logs" / "gsm8k_dsv4_sparse.log"
    assert "Accuracy: 0.950" in log.read_text()
    assert "Accuracy: 0.950" in res.stdout


def test_eval_baseline_options(stubs, server):
    res = stubs.run(
        "eval_gsm8k.sh", "--baseline", "--port", _port(server), "--num-examples", "200",
        "--num-shots", "8", "--model-path", "v4", "--", "--num-threads", "64",
    )
    assert res.returncode == 0, res.stderr
    call = stubs.module_call("run_eval")
    assert call["argv"] == [
        "--eval-name", "gsm8k", "--num-examples", "200", "--num-shots", "8",
        "--host", "127.0.0.1", "--port", _port(server), "--model", "v4", "--num-threads", "64",
    ]
    assert call["env"]["SGLANG_DSV4_SPARSE"] == "0"
    assert (stubs.work / "eval_logs" / "gsm8k_baseline.log").is_file()


def test_eval_no_log_and_status(stubs, server):
    res = stubs.run("eval_gsm8k.sh", "--port", _port(server), "--no-log", STUB_EXIT="3")
    assert res.returncode == 3
    assert not (stubs.work / "eval_logs").exists()
    res = stubs.run("eval_gsm8k.sh", "--port", _port(server), "--log", "x/y.log", STUB_EXIT="6")
    assert res.returncode == 6  # the status survives the tee
    assert (stubs.work / "x" / "y.log").is_file()


def test_eval_fail_fast(stubs, free_port):
    res = stubs.run("eval_gsm8k.sh", "--port", free_port)
    assert res.returncode == 5 and "no SGLang server reachable" in res.stderr
    res = stubs.run("eval_gsm8k.sh", "--port", free_port, PYTHONPATH="")
    assert res.returncode == 3
    assert stubs.nothing_ran()


def test_eval_dry_run(stubs):
    res = stubs.run("eval_gsm8k.sh", "--dry-run", PYTHONPATH="")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-2].endswith(
        "-m sglang.test.run_eval --eval-name gsm8k --num-examples 1319 --num-shots 64 "
        "--host 127.0.0.1 --port 30000"
    )
    assert stubs.nothing_ran()


# --------------------------------------------------------------------------
# which Python runs `python -m sglang...`
# --------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["profile.sh", "eval_gsm8k.sh"])
def test_python_defaults_to_the_checkouts_venv(stubs, script):
    # A copy of the scripts in a checkout with a .venv: without PYTHON the
    # wrappers run its interpreter; PYTHON still wins; without a .venv, python3.
    checkout = stubs.root / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("_common.sh", script):
        (checkout / "scripts" / name).write_text((SCRIPTS / name).read_text())
    def interpreter(**env):
        res = stubs.run(script, "--dry-run", scripts=checkout / "scripts", **env)
        assert res.returncode == 0, res.stderr
        command = next(line for line in res.stdout.splitlines() if " -m sglang.test." in line)
        return command.split(" -m ")[0]

    assert interpreter(PYTHON=None) == "python3"
    venv_python = checkout / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    _write_exe(venv_python, f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    assert interpreter(PYTHON=None) == str(venv_python)
    assert interpreter(PYTHON="/opt/other/python") == "/opt/other/python"
    help_text = stubs.run(script, "--help", scripts=checkout / "scripts", PYTHON=None).stdout
    assert ".venv/bin/python" in help_text
