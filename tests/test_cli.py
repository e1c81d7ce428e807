"""CLI conventions that scripts rely on: version, one-line usage errors, exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import nasctl
from nasctl import __version__


def test_version():
    assert nasctl("--version", check=0).stdout.strip() == f"nasctl {__version__}"


def test_usage_errors_are_one_line_with_exit_2(tmp_path):
    for args, msg in [
        (["profile", "--device", "local-cpu"], "profile needs --archs or --arch"),
        (["sample", "-o", tmp_path / "a.parquet", "--n", "abc"], "Invalid value for '--n'"),
        (["bogus"], "No such command 'bogus'"),
        (["sample", "-o", tmp_path / "a.parquet", "--stratify", "flops"], "Invalid value for '--stratify'"),
    ]:
        p = nasctl(*args, check=2)
        assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_sample_json_and_help(tmp_path):
    import json

    out = tmp_path / "a.csv"
    s = json.loads(nasctl("sample", "--space", "fbnet", "--n", 7, "-o", out, "--json", check=0).stdout)
    assert s["n"] == 7 and s["space"] == "fbnet" and out.read_text().startswith("arch_id,arch,space")
    for cmd in ("sample", "profile", "fit-predictor", "predict", "search", "retrain", "export", "report", "devices"):
        help_text = nasctl(cmd, "--help", check=0).stdout
        assert "Usage" in help_text and "--json" in help_text and "--quiet" in help_text


def test_devices_lists_profiles_and_checks_them_in_parallel(tmp_path, fast_device):
    import json
    import shutil

    d = tmp_path / "profiles"
    d.mkdir()
    shutil.copy(fast_device, d / "fast-cpu.toml")
    (d / "gone.toml").write_text('transport = "ssh"\nruntime = "onnxruntime"\n[ssh]\nhost = "127.0.0.1"\nport = 1\nuser = "x"\n')
    env = {**os.environ, "NASCTL_PROFILES": str(d)}
    listed = json.loads(nasctl("devices", "--json", env=env, check=0).stdout)["devices"]
    assert {"fast-cpu", "gone", "local-cpu", "xavier", "rpi4", "android"} <= {x["name"] for x in listed}
    p = nasctl("devices", "--check", "--timeout", "30", "--json", env=env, cwd=tmp_path, check=3)
    got = {x["name"]: x for x in json.loads(p.stdout)["devices"]}
    assert got["fast-cpu"]["reachable"] and got["fast-cpu"]["cpu_model"]
    assert not got["gone"]["reachable"] and "127.0.0.1" in got["gone"]["error"]


GATE = Path(__file__).resolve().parents[1] / "examples" / "ci-latency-gate.sh"
ARCH = "-".join(["k3_e3"] * 21)


def test_ci_latency_gate_fails_over_budget_and_passes_under_it(tmp_path, fast_device):
    import json

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ok = subprocess.run(["bash", GATE, ARCH, "1000", fast_device], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    r = json.loads(ok.stdout)
    assert r["ok"] and 0 < r["latency_ms"] < 1000 and r["budget_ms"] == 1000
    over = subprocess.run(["bash", GATE, ARCH, "0.01", fast_device], capture_output=True, text=True, env=env)
    assert over.returncode == 1 and not json.loads(over.stdout)["ok"] and "exceeds the 0.01 ms budget" in over.stderr
    bad = subprocess.run(["bash", GATE, "k3_e3-nope", "10", fast_device], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stdout == ""


def test_option_defaults_and_choices_are_the_librarys():
    """The CLI is a thin layer: every option that sets a library field defaults to that field's
    default, and --method offers the library's one list of methods."""
    from dataclasses import MISSING, fields

    import typer

    from nasctl.cli import app
    from nasctl.search import ALL_METHODS, Job, SearchConfig
    from nasctl.train.retrain import Recipe

    commands = typer.main.get_command(app).commands
    renamed = {"lambda_": "fixed_lambda", "verify_wait": "verify_wait_s", "predictor": "predictors"}
    checked = 0
    for command, cls in (("search", SearchConfig), ("search", Job), ("retrain", Recipe)):
        defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        for p in commands[command].params:
            name = renamed.get(p.name, p.name)
            if name in defaults:
                got = getattr(p.default, "value", p.default)
                assert got == defaults[name] or (got is None and defaults[name] == ()), (command, p.name, got, defaults[name])
                checked += 1
    assert checked >= 35
    method = next(p for p in commands["search"].params if p.name == "method")
    assert tuple(m.value for m in method.type_descriptor.annotation) == ALL_METHODS
