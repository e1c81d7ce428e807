"""Every bad input gets one line and exit 2, and leaves the filesystem as it found it.

The fuzz cases come from the typer app itself: every command, every option and argument, each
given hostile values (nan, inf, -1, 0, 1e30, the empty string, a 10 kB string, a folder, a path
inside a file, and for an output the command's own input). A value that an option's declared
range admits is legal and skipped; so is a value listed in LEGAL below, where a text option
takes it. Each case runs the real CLI in this process on a base invocation that is valid (the
base test below runs each base for real), with only the fuzzed value changed.

The predictor fixture is fitted on 40 real rows: HELP's Xeon Gold 6226 latencies of FBNet-space
archs (tests/data/help-fbnet-40.csv, MIT licence beside it).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest
import typer

from conftest import DATA
from nasctl.cli import app, run

FBNET_ARCH = "k5_e6-skip-k3_e1_g2-skip-k5_e1-skip-skip-skip-k5_e6-k5_e1-k3_e1_g2-k5_e1-k5_e6-k3_e6-k3_e3-k5_e6-k3_e6-k3_e3-k5_e1-k3_e3-k5_e1-k5_e1_g2"
TINY_ARCH = "k3_e3-k3_e3-k3_e3-k3_e3"
LONG = "x" * 10_000

# Base invocations, run in the workspace folder. Options that exclude each other get their own
# base (ALT): fuzzing --arch of profile drops --archs, and so on.
BASE = {
    "sample": ["sample", "-o", "out/a.parquet", "--space", "tiny.toml", "--n", "3", "--seed", "0", "--stratify", "none",
               "--resolution", "32", "--width-mult", "1.0", "--num-classes", "10", "--macro", "cifar"],
    "profile": ["profile", "--device", "fast-cpu.toml", "--archs", "archs.parquet", "-o", "out/rows.parquet",
                "--space", "tiny.toml", "--resolution", "32", "--width-mult", "1.0", "--num-classes", "10", "--macro", "cifar"],
    "fit-predictor": ["fit-predictor", "help.csv", "-o", "out/p.pt", "--metric", "latency_ms", "--space", "fbnet",
                      "--test", "0.2", "--seed", "0", "--members", "2", "--config-id", "help-xeon-gold-6226"],
    "predict": ["predict", "pred.pt", "help.csv", "-o", "out/pred.csv"],
    "search": ["search", "-o", "out/s", "--predictor", "pred.pt", "--target-ms", "100", "--space", "fbnet", "--data", "digits",
               "--epochs", "1", "--warmup-epochs", "0", "--batch", "64", "--width-mult", "0.25", "--resolution", "16",
               "--verify", "fast-cpu.toml", "--tolerance", "0.5", "--no-calibrate"],
    "retrain": ["retrain", TINY_ARCH, "-o", "out/r", "--space", "tiny.toml", "--data", "digits", "--macro", "cifar",
                "--epochs", "1", "--batch", "64", "--lr", "0.05"],
    "export": ["export", "run", "-o", "out/m.onnx", "--format", "onnx", "--opset", "17", "--batch", "1"],
    "report": ["report", ".", "-o", "out/report.html"],
    "devices": ["devices", "--timeout", "5"],
    "tabular": ["tabular", "nas-bench-macro", "-o", "out/t.parquet"],
    "info": ["info", TINY_ARCH, "--space", "tiny.toml", "--resolution", "32", "--width-mult", "1.0", "--num-classes", "10",
             "--macro", "cifar"],
}
ALT = {
    ("profile", "arch"): ["profile", "--device", "fast-cpu.toml", "--arch", TINY_ARCH, "--space", "tiny.toml", "-o", "out/rows.parquet"],
    ("predict", "arch"): ["predict", "pred.pt", "--arch", FBNET_ARCH],
    ("retrain", "resume"): ["retrain", "--resume", "run"],
    ("search", "max_params"): ["search", "-o", "out/s", "--max-params", "9M", "--space", "fbnet", "--epochs", "1", "--warmup-epochs", "0"],
    ("search", "max_mflops"): ["search", "-o", "out/s", "--max-mflops", "900", "--space", "fbnet", "--epochs", "1", "--warmup-epochs", "0"],
    ("search", "lambda_"): BASE["search"] + ["--method", "fbnet"],
    ("search", "host"): [a for a in BASE["search"]],
}
# The file each command reads that its output must never replace.
OWN_INPUT = {"profile": "archs.parquet", "fit-predictor": "help.csv", "predict": "help.csv", "search": "pred.pt",
             "retrain": "run/arch.json", "export": "run/model.pt", "report": "rows.parquet", "sample": "tiny.toml"}
# Text values an option takes as legal (they would start real work): a file or folder may be
# named "nan" or "0", and search and retrain write into a folder that exists.
NAMES = {"nan", "inf", "-1", "0", "1e30"}
LEGAL: dict[tuple[str, str], set[str]] = {
    **{(c, "output"): NAMES for c in ("sample", "profile", "fit-predictor", "predict", "export", "report", "tabular")},
    **{(c, "output"): NAMES | {"<dir>"} for c in ("search", "retrain")},
}
HOSTILE = ["nan", "inf", "-1", "0", "1e30", "", LONG, "<dir>", "<in-file>", "<own-input>"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace with every input the bases read: real rows, a fitted predictor, a trained run."""
    d = tmp_path_factory.mktemp("ws")
    shutil.copy(DATA / "tiny.toml", d / "tiny.toml")
    shutil.copy(DATA / "fast-cpu.toml", d / "fast-cpu.toml")
    shutil.copy(DATA / "help-fbnet-40.csv", d / "help.csv")
    (d / "a-folder").mkdir()
    (d / "a-file").write_text("not a folder\n")
    with _cwd(d):
        for args in (["sample", "--space", "tiny.toml", "--n", "4", "-o", "archs.parquet"],
                     ["fit-predictor", "help.csv", "-o", "pred.pt", "--members", "2"],
                     ["retrain", TINY_ARCH, "--space", "tiny.toml", "-o", "run", "--epochs", "1"],
                     ["profile", "--device", "fast-cpu.toml", "--arch", TINY_ARCH, "--space", "tiny.toml", "-o", "rows.parquet"]):
            code, _, errtext = _run(args)
            assert code == 0, (args, errtext)
    return d


@contextlib.contextmanager
def _cwd(d: Path):
    old = os.getcwd()
    os.chdir(d)
    try:
        yield
    finally:
        os.chdir(old)


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(args))
    return code, out.getvalue(), err.getvalue()


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*")}


def _legal_number(param, value: str) -> bool | None:
    """Whether a number option admits `value` by its declared range (None: not a number option)."""
    ann = param.type_descriptor.annotation
    if ann not in (int, float):
        return None
    try:
        v = ann(value) if ann is float else int(value)
    except ValueError:
        return False
    if ann is float and not math.isfinite(v):
        return False
    return (param.min is None or v >= param.min) and (param.max is None or v <= param.max)


def cases() -> list[tuple[str, str, str]]:
    """(command, parameter, hostile value) for every value that is not legal for it."""
    out = []
    for name, sub in typer.main.get_command(app).commands.items():
        for p in sub.params:
            ann = p.type_descriptor.annotation
            if ann is bool:
                continue
            for v in HOSTILE:
                legal = _legal_number(p, v)
                if legal or v in LEGAL.get((name, p.name), ()):
                    continue
                if v == "<own-input>" and p.name != "output":
                    continue
                out.append((name, p.name, v))
    return out


def _args(name: str, param, value: str, ws: Path) -> list[str]:
    base = list(ALT.get((name, param.name), BASE[name]))
    value = {"<dir>": "a-folder", "<in-file>": "a-file/x" + (Path(base[base.index("-o") + 1]).suffix if "-o" in base else ""),
             "<own-input>": OWN_INPUT.get(name, "")}.get(value, value)
    if isinstance(param, typer.core.TyperArgument):
        positional = [i for i in range(1, len(base)) if not base[i].startswith("-") and not base[i - 1].startswith("-")]
        idx = [p.name for p in typer.main.get_command(app).commands[name].params if isinstance(p, typer.core.TyperArgument)].index(param.name)
        if idx < len(positional):
            base[positional[idx]] = value
        else:
            base.insert(1, value)
        return base
    flag = param.opts[0]
    names = set(param.opts) | set(param.secondary_opts or [])
    for i, a in enumerate(base):
        if a in names:
            base[i + 1] = value
            return base
    return base + [flag, value]


@pytest.mark.parametrize("name,param,value", cases(), ids=lambda x: x if len(str(x)) < 20 else "long")
def test_hostile_value_is_refused_in_one_line(ws, name, param, value):
    p = next(q for q in typer.main.get_command(app).commands[name].params if q.name == param)
    args = _args(name, p, value, ws)
    before = _snapshot(ws)
    with _cwd(ws):
        code, out, errtext = _run(args)
    lines = errtext.strip().splitlines()
    assert code == 2, f"{[a[:40] for a in args]}: exit {code}\n{errtext[-2000:]}"
    assert "Traceback" not in errtext + out and out == ""
    assert len(lines) == 1 and lines[0].startswith("nasctl: error: "), errtext[-2000:]
    assert len(lines[0]) < 600
    assert _snapshot(ws) == before


def test_each_base_invocation_works(ws, tmp_path):
    """The bases are valid: the fuzz cases fail only by their hostile value."""
    d = tmp_path / "ws"
    shutil.copytree(ws, d)
    for name in ("sample", "predict", "export", "report", "retrain", "info", "tabular"):
        with _cwd(d):
            code, _, errtext = _run(BASE[name])
        assert code == 0, (name, errtext[-1000:])
    assert (d / "out/a.parquet").is_file() and (d / "out/m.onnx").is_file() and (d / "out/r/model.pt").is_file()
    assert (d / "out/t.parquet").is_file()


class _Payload:
    """A pickle that runs a command when loaded the unsafe way."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_batches_cannot_run_code(ws, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "cifar"
    evil.mkdir()
    (evil / "data_batch_1").write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}))
    run_dir = tmp_path / "shared-run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(f'{{"arch": "{TINY_ARCH}", "space": "{ws / "tiny.toml"}", "macro": "cifar", '
                                      f'"data": "cifar10:{evil}", "recipe": {{"epochs": 1}}}}')
    shutil.copy(ws / "run" / "checkpoint.pt", run_dir / "checkpoint.pt")
    for args in (["retrain", TINY_ARCH, "--space", "tiny.toml", "--data", f"cifar10:{evil}", "-o", str(tmp_path / "r")],
                 ["retrain", "--resume", str(run_dir)]):
        with _cwd(ws):
            code, _, errtext = _run(args)
        assert code == 2 and "refused to load posix.system" in errtext, errtext
        assert not marker.exists() and not (tmp_path / "r").exists()


def test_cifar_batches_of_the_real_format_load_and_wrong_ones_are_refused(tmp_path):
    import numpy as np

    from nasctl.data import load_data
    from nasctl.errors import UserError

    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        doc = {b"batch_label": b"x", b"labels": rng.integers(0, 10, 4).tolist(),
               b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"filenames": [b"a.png"] * 4}
        (tmp_path / name).write_bytes(pickle.dumps(doc, protocol=2))
    d = load_data(f"cifar10:{tmp_path}")
    assert len(d.train) == 20 and len(d.val) == 4 and tuple(d.train[0][0].shape) == (3, 32, 32)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(UserError, match="data_batch_3 is not a CIFAR-10 batch"):
        load_data(f"cifar10:{tmp_path}")


def test_a_diverged_retrain_writes_no_model(tmp_path):
    import torch
    from torch.utils.data import TensorDataset

    from nasctl.data import Data
    from nasctl.errors import UserError
    from nasctl.space import load_space
    from nasctl.train.retrain import Recipe, retrain

    x = torch.full((64, 3, 32, 32), float("nan"))
    data = Data("nan", TensorDataset(x, torch.zeros(64, dtype=torch.long)), TensorDataset(x[:8], torch.zeros(8, dtype=torch.long)), 10, 32)
    arch = load_space(DATA / "tiny.toml").parse(TINY_ARCH)
    with pytest.raises(UserError, match="training diverged: the loss is nan in epoch 1"):
        retrain(arch, data, Recipe(epochs=2, batch=32), tmp_path)
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_json_output_is_strict():
    import json

    from nasctl.tables import to_json

    text = to_json({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": float("-inf")}})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {"a": None, "b": [1.5, None], "c": {"d": None}}


SPACE_CASES = {
    "stride = 0": ("stride = 2", "stride = 0", "greater than or equal to 1"),
    "negative stride": ("stride = 2", "stride = -2", "greater than or equal to 1"),
    "string channels": ("channels = 24", 'channels = "24"', "valid integer"),
    "layers = inf": ("layers = 2", "layers = inf", "valid integer"),
    "float layers": ("layers = 2", "layers = 2.5", "valid integer"),
    "negative layers": ("layers = 2", "layers = -2", "greater than or equal to 1"),
    "negative channels": ("channels = 24", "channels = -24", "greater than or equal to 1"),
    "stem 0": ("channels = 16, stride = 1 }", "channels = 0, stride = 1 }", "greater than or equal to 1"),
    "even kernel": ('"k5_e3"', '"k4_e3"', "kernel sizes must be odd"),
    "unknown key": ("[params]", 'typo = 1\n[params]', "Extra inputs are not permitted"),
}


@pytest.mark.parametrize("case", SPACE_CASES, ids=list(SPACE_CASES))
def test_space_files_are_checked_against_the_schema(ws, tmp_path, case):
    old, new, msg = SPACE_CASES[case]
    text = (DATA / "tiny.toml").read_text()
    assert old in text
    (tmp_path / "bad.toml").write_text(text.replace(old, new, 1))
    code, _, errtext = _run(["sample", "--space", str(tmp_path / "bad.toml"), "-o", str(tmp_path / "a.csv")])
    assert code == 2 and msg in errtext and len(errtext.strip().splitlines()) == 1, errtext
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def _toml(doc: dict) -> str:
    def val(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
        return repr(v) if isinstance(v, str) else str(v)

    top = "\n".join(f"{k} = {val(v)}" for k, v in doc.items() if k not in ("params", "macro"))
    return f"{top}\n[params]\n" + "\n".join(f"{k} = {val(v)}" for k, v in doc["params"].items()) + \
        "\n[macro.m]\n" + "\n".join(f"{k} = {val(v)}" for k, v in doc["macro"].items()) + "\n"


def test_generated_space_files_are_built_or_refused_in_one_line(tmp_path):
    """Hypothesis writes space files near the valid ones; each is sampled and built, or refused."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    good = st.sampled_from([8, 16, 24, 32, 48])
    bad = st.one_of(good, st.integers(-3, 70), st.sampled_from([0.5, 2.0, float("inf"), float("nan"), "8"]))
    good_op = st.sampled_from(["k3_e3", "k5_e6", "skip", "k3_e1_g2", "k7_e1_se25"])
    bad_op = st.one_of(good_op, st.sampled_from(["k4_e3", "k3_e3_g3", "k0_e1", "bogus"]))

    def space(num, op, stride):
        return st.fixed_dictionaries({
            "name": st.just("gen"),
            "ops": st.lists(op, min_size=1, max_size=3, unique=True),
            "params": st.fixed_dictionaries({"macro": st.just("m"), "resolution": num, "num_classes": num}),
            "macro": st.fixed_dictionaries({
                "stem": st.fixed_dictionaries({"channels": num, "stride": stride}),
                "stages": st.lists(st.fixed_dictionaries({"channels": num, "layers": stride, "stride": stride}), min_size=1, max_size=3),
                "head": st.fixed_dictionaries({"channels": num}),
            }),
        })

    doc = space(good, good_op, st.sampled_from([1, 2])) | space(bad, bad_op, bad)
    seen = {0: 0, 2: 0}

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(doc)
    def check(d):
        f = tmp_path / "gen.toml"
        f.write_text(_toml(d))
        out = tmp_path / "a.csv"
        out.unlink(missing_ok=True)
        code, _, errtext = _run(["sample", "--space", str(f), "--n", "2", "-o", str(out)])
        assert code in (0, 2) and "Traceback" not in errtext, (f.read_text(), errtext)
        if code == 2:
            assert len(errtext.strip().splitlines()) == 1 and not out.exists(), errtext
        else:
            import torch

            from nasctl.models import build
            from nasctl.space import load_space

            sp = load_space(f)
            net = build(sp.parse(sp.to_string(tuple(next(o for o in layer.ops) for layer in sp.layers))))
            r = sp.params.resolution
            assert net(torch.zeros(1, 3, r, r)).shape == (1, sp.params.num_classes)
        seen[code] += 1

    check()
    assert seen[0] and seen[2], seen  # both outcomes were generated: the test can fail either way


def test_damaged_predictor_metadata_is_refused(ws, tmp_path):
    import json

    import torch

    blob = torch.load(ws / "pred.pt", weights_only=True)
    meta = json.loads(blob["meta"])
    cases = {
        "invalid json": "{",
        "no space": json.dumps({k: v for k, v in meta.items() if k != "space"}),
        "unknown kind": json.dumps({**meta, "kind": "forest"}),
        "unknown activation": json.dumps({**meta, "mlp": {"hidden": [8], "activation": "swish"}}),
        "huge members": json.dumps({**meta, "kind": "mlp", "members": 10**9}),
        "weights of another model": json.dumps({**meta, "kind": "mlp", "members": 2}),
    }
    for case, text in cases.items():
        f = tmp_path / "bad.pt"
        torch.save({**blob, "meta": text}, f)
        code, _, errtext = _run(["predict", str(f), "--arch", FBNET_ARCH])
        assert code == 2 and ("damaged predictor metadata" in errtext or "do not match" in errtext), (case, errtext)


def test_damaged_runs_devices_and_stores_get_one_line(ws, tmp_path):
    d = tmp_path / "ws"
    shutil.copytree(ws, d)
    (d / "garbage.pt").write_bytes(b"\x80\x81\xff\x00" * 64)
    shutil.copytree(d / "run", d / "trunc")
    ck = d / "trunc" / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    shutil.copytree(d / "run", d / "badjson")
    (d / "badjson" / "run.json").write_text("{")
    cases = [
        (["profile", "--device", "garbage.pt", "--arch", TINY_ARCH, "--space", "tiny.toml", "-o", "x.parquet"], "not a text (TOML) file"),
        (["retrain", "--resume", "trunc"], "cannot resume from it"),
        (["retrain", "--resume", "badjson"], "not a run record"),
        (["profile", "--device", "fast-cpu.toml", "--arch", TINY_ARCH, "--space", "tiny.toml", "-o", "help.csv"], "not a row store"),
        (["profile", "--device", "rpi4", "--host", "pi@h:99999", "--check"], "not a TCP port"),
        (["export", "run", "-o", "run/model.pt"], "must end in .onnx"),
        (["export", "run", "-o", "run/arch.onnx", "--host", "h"], "--host names the board"),
        (["report", ".", "-o", "rows.parquet"], "must end in .html"),
        (["predict", "pred.pt", "help.csv", "-o", "help.csv"], "would write over the input"),
        (["search", "-o", "s", "--predictor", "pred.pt", "--target-ms", "100", "--space", "fbnet", "--verify", "nosuch"], "unknown device 'nosuch'"),
    ]
    for args, msg in cases:
        before = _snapshot(d)
        with _cwd(d):
            code, _, errtext = _run(args)
        assert code == 2 and msg in errtext and len(errtext.strip().splitlines()) == 1, (args, errtext)
        assert _snapshot(d) == before, args


def test_report_draws_what_it_can_and_names_damaged_files(ws, tmp_path):
    import pandas as pd

    d = tmp_path / "ws"
    shutil.copytree(ws, d)
    (d / "s").mkdir()
    (d / "s" / "search.csv").write_text("epoch\n1\n")
    (d / "s" / "arch.json").write_text("{")
    (d / "r2").mkdir()
    (d / "r2" / "arch.json").write_text(f'{{"arch": "{TINY_ARCH}"}}')
    (d / "r2" / "metrics.csv").write_text("")
    rows = pd.read_parquet(d / "rows.parquet")
    pd.concat([rows.assign(latency_ms=-3.0), rows.assign(latency_ms=float("inf")), rows]).to_parquet(d / "rows.parquet")
    with _cwd(d):
        code, _, errtext = _run(["report", ".", "--json"])
    assert code == 0, errtext
    page = (d / "report.html").read_text()
    assert "Files not drawn" in page and "s/arch.json" in page and "r2/metrics.csv" in page


def test_sigint_says_interrupted(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    # A shell without job control starts background jobs with SIGINT ignored, and Python then
    # never raises KeyboardInterrupt: the child gets the default disposition, as at a terminal.
    p = subprocess.Popen([sys.executable, "-m", "nasctl", "retrain", TINY_ARCH, "--space", str(DATA / "tiny.toml"),
                          "-o", str(tmp_path / "r"), "--epochs", "200", "--train-limit", "200"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not (tmp_path / "r" / "checkpoint.pt").exists() and p.poll() is None:  # mid-training, however slow
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _, errtext = p.communicate(timeout=300)  # a hang guard: it exits within a step
    finally:
        p.kill()  # never left running beside the rest of the suite
        p.wait()
    assert p.returncode == 130 and errtext.strip().splitlines()[-1] == "nasctl: interrupted" and "Traceback" not in errtext, errtext
