"""Predictor-guided search (`search --method predictor`): the loop, its trainer contract, resume,
and its bad input, run against NAS-Bench-Macro through the lookup trainer of benchmarks/ (so every
accuracy the search sees is a logged query) and NAS-Bench-201 through HELP's latency table."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, nasctl
from nasctl.guided.search import GuidedJob, Pool, targets
from nasctl.models.cost import cost_table
from nasctl.space import load_space
from nasctl.tabular import table_rows

LOOKUP = ROOT / "benchmarks" / "lookup.py"
PY = shlex.quote(sys.executable)


@pytest.fixture(scope="module")
def nbm(tmp_path_factory):
    """NAS-Bench-Macro's top-1 as a lookup table, the trainer that reads it, and its query log."""
    d = tmp_path_factory.mktemp("nbm")
    rows = table_rows("nas-bench-macro")
    (d / "top1.json").write_text(json.dumps(dict(zip(rows["arch"], rows["top1"].astype(float)))))
    return {"dir": d, "rows": rows, "trainer": f"{PY} {shlex.quote(str(LOOKUP))} top1 {shlex.quote(str(d / 'top1.json'))} {{arch}}"}


def _queries(log):
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_the_loop_trains_its_budget_through_the_trainer_and_picks_the_best_trained_net_under_the_budget(nbm, tmp_path):
    log = tmp_path / "queries.log"
    env = {**os.environ, "NASCTL_LOOKUP_LOG": str(log)}
    args = ["search", "--method", "predictor", "--space", "nas-bench-macro", "--max-mflops", "50", "--trainer", nbm["trainer"],
            "--budget", "12", "-o", tmp_path / "pg", "--json"]
    doc = json.loads(nasctl(*args, env=env, check=0).stdout)
    trained = pd.read_parquet(tmp_path / "pg" / "trained.parquet")
    asked = _queries(log)
    assert len(trained) == 12 == len(asked) == trained["arch"].nunique() and (trained["status"] == "ok").all()
    assert sorted(q["arch"] for q in asked) == sorted(trained["arch"])  # every accuracy came through the trainer
    table = nbm["rows"].set_index("arch")
    assert np.allclose(trained["top1"], table.loc[trained["arch"], "top1"])
    space = load_space("nas-bench-macro")
    macs = cost_table(space).of(np.stack([space.parse(a).indices for a in trained["arch"]]))[0]
    assert (macs <= 50e6).all()  # every net trained meets the budget
    assert doc["arch"] == trained.loc[trained["top1"].idxmax(), "arch"] and doc["top1_measured"] == trained["top1"].max()
    assert len(pd.read_csv(tmp_path / "pg" / "search.csv")) == 12
    assert (tmp_path / "pg" / "search.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "pg" / "arch.json").read_text())["arch"] == doc["arch"]

    # A rerun resumes: nothing is trained twice; a larger budget trains only the difference.
    again = json.loads(nasctl(*args, env=env, check=0).stdout)
    assert again["arch"] == doc["arch"] and len(_queries(log)) == 12
    nasctl(*args[:-5], "--budget", "15", "-o", tmp_path / "pg", env=env, check=0)
    assert len(_queries(log)) == 15 and len(pd.read_parquet(tmp_path / "pg" / "trained.parquet")) == 15


def test_small_spaces_are_searched_exactly_and_large_ones_by_a_draw(tmp_path):
    nbm_space = load_space("nas-bench-macro")
    pool = Pool(nbm_space, targets(nbm_space, GuidedJob(space="nas-bench-macro", max_mflops="60")), 0)
    assert pool.exact and len(pool.idx) == 6561 == len({r.tobytes() for r in pool.idx})
    macs = cost_table(nbm_space).of(pool.idx)[0]
    assert (pool.sure == (macs <= 60e6)).all()
    big = load_space("proxyless")
    assert not Pool(big, targets(big, GuidedJob(space="proxyless", max_mflops="300")), 0).exact


def test_the_trainer_contract_metrics_csv_printed_top1_and_failures(nbm, tmp_path):
    """top1 from {dir}/metrics.csv or a printed top1=; a failing run is an error row and the
    search goes on; a value that is no fraction is an error, not a figure."""
    script = tmp_path / "trainer.py"
    script.write_text(
        "import sys, pathlib, zlib\n"
        "arch, out = sys.argv[1], pathlib.Path(sys.argv[2])\n"
        "h = zlib.crc32(arch.encode()) % 4\n"
        "if h == 0: sys.exit('out of GPU memory')\n"
        "if h == 1: print('top1=1.7')\n"
        "elif h == 2: out.mkdir(parents=True, exist_ok=True); (out / 'metrics.csv').write_text('epoch,top1\\n1,0.5\\n2,0.625\\n')\n"
        "else: print('noise'); print('top1=0.75')\n")
    out = tmp_path / "pg"
    nasctl("search", "--method", "predictor", "--space", "nas-bench-macro", "--max-mflops", "80", "--budget", "10",
           "--trainer", f"{PY} {script} {{arch}} {{dir}}", "-o", out, check=0)
    t = pd.read_parquet(out / "trained.parquet")
    assert len(t) == 10
    import zlib

    for _, r in t.iterrows():
        h = zlib.crc32(r["arch"].encode()) % 4
        want = {0: ("error", None), 1: ("error", None), 2: ("ok", 0.625), 3: ("ok", 0.75)}[h]
        assert (r["status"], r["top1"] if r["status"] == "ok" else None) == want, r.to_dict()
        if h == 0:
            assert "exited with code 1: out of GPU memory" in r["error"]
        if h == 1:
            assert "not a fraction" in r["error"]


def test_a_trainer_that_always_fails_ends_the_search_with_exit_1_and_keeps_its_rows(tmp_path):
    out = tmp_path / "pg"
    p = nasctl("search", "--method", "predictor", "--space", "nas-bench-macro", "--max-mflops", "80", "--budget", "10",
               "--trainer", f"{PY} -c 'import sys; sys.exit(\"no GPU\")' {{arch}}", "-o", out)
    last = p.stderr.strip().splitlines()[-1]  # the progress lines above it, then one error line
    assert p.returncode == 1 and last.startswith("nasctl: error: every trainer run failed (5 of 5") and last.endswith("no GPU"), p.stderr
    t = pd.read_parquet(out / "trained.parquet")
    assert len(t) == 5 and (t["status"] == "error").all()  # the initial design, then it stops


def test_a_trainer_that_only_submits_and_waits(nbm, tmp_path):
    """A scheduler's contract: the command submits the job, blocks until it is done, and passes
    the result on. Here the "cluster" is a detached process writing a file; two run at once."""
    submit = tmp_path / "submit.sh"
    submit.write_text(
        "#!/bin/sh\nset -e\njob=\"$2/job.out\"; mkdir -p \"$2\"\n"
        f"(sleep 0.2; {sys.executable} {LOOKUP} top1 {nbm['dir'] / 'top1.json'} \"$1\" > \"$job.tmp\"; mv \"$job.tmp\" \"$job\") &\n"
        "while [ ! -f \"$job\" ]; do sleep 0.05; done\ncat \"$job\"\n")
    submit.chmod(0o755)
    out = tmp_path / "pg"
    nasctl("search", "--method", "predictor", "--space", "nas-bench-macro", "--max-mflops", "60", "--budget", "8", "--jobs", "2",
           "--trainer", f"{submit} {{arch}} {{dir}}", "-o", out, check=0)
    t = pd.read_parquet(out / "trained.parquet")
    assert len(t) == 8 and (t["status"] == "ok").all() and set(t["slot"]) == {0, 1}
    assert np.allclose(t["top1"], nbm["rows"].set_index("arch").loc[t["arch"], "top1"])


@pytest.fixture(scope="module")
def nb201(tmp_path_factory):
    """Two HELP NB201 devices as predictors (300 rows each) and one as a command device."""
    d = tmp_path_factory.mktemp("nb201")
    nasctl("tabular", "help-nb201", "-o", d / "rows.parquet", check=0)
    rows = pd.read_parquet(d / "rows.parquet")
    rows.sample(300, random_state=0).to_parquet(d / "fit.parquet")
    for dev in ("pixel3", "gold_6240"):
        nasctl("fit-predictor", d / "fit.parquet", "--metric", f"{dev}_ms", "-o", d / f"{dev}.pt", check=0)
    (d / "pixel3.json").write_text(json.dumps(dict(zip(rows["arch"], rows["pixel3_ms"].astype(float)))))
    (d / "pixel3.toml").write_text(f'name = "pixel3-table"\ntransport = "command"\nruntime = "onnxruntime"\n'
                                   f'command = "{sys.executable} {LOOKUP} latency {d / "pixel3.json"} {{arch}}"\n')
    # A stand-in accuracy that a search can climb: the share of 3x3 convs, as a fraction.
    (d / "trainer.py").write_text("import sys\nprint('top1=%r' % (sys.argv[1].count('nor_conv_3x3') / 6))\n")
    return {"dir": d, "rows": rows.set_index("arch")}


def test_several_devices_at_once_with_a_margin_and_verified_on_a_command_device(nb201, tmp_path):
    d, rows = nb201["dir"], nb201["rows"]
    p3, gold = np.percentile(rows["pixel3_ms"], 50), np.percentile(rows["gold_6240_ms"], 50)
    out = tmp_path / "pg"
    doc = json.loads(nasctl("search", "--method", "predictor", "--space", "nb201", "--predictor", d / "pixel3.pt", "--target-ms", p3,
                            "--predictor", d / "gold_6240.pt", "--target-ms", gold, "--budget", "10",
                            "--trainer", f"{PY} {d / 'trainer.py'} {{arch}}", "--verify", f"pixel3={d / 'pixel3.toml'}", "-o", out, "--json",
                            check=0).stdout)
    by = {t["device"]: t for t in doc["targets"]}
    assert set(by) == {"pixel3", "gold_6240"} and all(t["met"] for t in doc["targets"])
    assert by["pixel3"]["measured"] == rows.loc[doc["arch"], "pixel3_ms"] <= p3  # verified on the table
    assert by["gold_6240"]["bound"] <= gold and by["gold_6240"]["margin"] > 0  # met with the predictor's margin
    verified = pd.read_parquet(out / "verify.parquet")
    assert doc["device_measurements"] == len(verified) and (verified["status"] == "ok").all()
    assert np.allclose(verified["latency_ms"], rows.loc[verified["arch"], "pixel3_ms"])
    trained = pd.read_parquet(out / "trained.parquet")
    measured = dict(zip(verified["arch"], verified["latency_ms"]))
    for a in trained["arch"]:  # a net trained was predicted under both with margin, or measured under pixel3's
        assert measured.get(a, 0) <= p3


def _accuracy_predictor(path):
    """A top-1 predictor fitted on 300 of NAS-Bench-Macro's rows (a user's own trained nets)."""
    nasctl("tabular", "nas-bench-macro", "-o", path.with_suffix(".parquet"), check=0)
    pd.read_parquet(path.with_suffix(".parquet")).sample(300, random_state=0).to_parquet(path.with_suffix(".parquet"))
    nasctl("fit-predictor", path.with_suffix(".parquet"), "--metric", "top1", "-o", path, check=0)


def test_the_accuracy_predictor_mode_picks_the_best_predicted_feasible_net(nbm, tmp_path):
    _accuracy_predictor(tmp_path / "acc.pt")
    doc = json.loads(nasctl("search", "--method", "predictor", "--space", "nas-bench-macro", "--accuracy", tmp_path / "acc.pt",
                            "--max-mflops", "50", "-o", tmp_path / "pg", "--json", check=0).stdout)
    from nasctl.predict import Predictor

    acc = Predictor.load(tmp_path / "acc.pt")
    space = load_space("nas-bench-macro")
    pool = Pool(space, targets(space, GuidedJob(space="nas-bench-macro", max_mflops="50")), 0)
    mean = acc.predict_indices(pool.idx)[0]
    best = space.from_indices(pool.idx[np.flatnonzero(pool.sure)[mean[pool.sure].argmax()]]).string
    assert doc["arch"] == best and doc["trained"] == 0 and doc["top1_measured"] is None


@pytest.mark.parametrize("extra, says, code", [
    (["--trainer", "train.sh --out {dir}", "--budget", "10"], "must hold {arch}", 2),
    (["--trainer", "train.sh {arch} {gpu}", "--budget", "10"], "unknown placeholder(s) {gpu}", 2),
    (["--trainer", "train.sh {arch}", "--budget", "3"], "--budget 3 is below the initial design of 5", 2),
    (["--trainer", "train.sh {arch}"], "give --budget", 2),
    (["--max-mflops", "1", "--trainer", "t {arch}", "--budget", "10"], "outside what the space reaches", 2),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, extra, says, code):
    args = ["search", "--method", "predictor", "--space", "nas-bench-macro", "-o", tmp_path / "pg", *extra]
    if "--max-mflops" not in extra:
        args += ["--max-mflops", "50"]
    p = nasctl(*args)
    assert p.returncode == code and len(p.stderr.strip().splitlines()) == 1 and says in p.stderr, p.stderr
    assert not (tmp_path / "pg").exists()


def test_an_accuracy_predictor_of_another_space_and_an_unreachable_latency_target_are_refused(nb201, tmp_path):
    d = nb201["dir"]
    p = nasctl("search", "--method", "predictor", "--space", "nas-bench-macro", "--accuracy", d / "pixel3.pt", "--max-mflops", "50",
               "-o", tmp_path / "a")
    assert p.returncode == 2 and "not of top-1" in p.stderr
    _accuracy_predictor(tmp_path / "acc.pt")
    p = nasctl("search", "--method", "predictor", "--space", "nb201", "--accuracy", tmp_path / "acc.pt", "--predictor", d / "pixel3.pt",
               "--target-ms", "30", "-o", tmp_path / "b")
    assert p.returncode == 2 and "fitted on space 'nas-bench-macro'" in p.stderr, p.stderr
    p = nasctl("search", "--method", "predictor", "--space", "nb201", "--predictor", d / "pixel3.pt", "--target-ms", "0.01",
               "--trainer", "t {arch}", "--budget", "10", "-o", tmp_path / "c")
    assert p.returncode == 2 and "no arch of the space is predicted to meet every target" in p.stderr, p.stderr
    assert not any((tmp_path / x).exists() for x in "abc")


def test_nasctl_retrain_as_the_trainer_and_a_resume_after_kill_9(tmp_path):
    """The real loop: nasctl's own retrain (digits, 1 epoch) trains each net; the whole job is
    killed with SIGKILL mid-training, and the same command resumes: the finished run is kept,
    the one in flight is trained again from a fresh folder, and the budget is met exactly."""
    out = tmp_path / "pg"
    args = [sys.executable, "-m", "nasctl", "search", "--method", "predictor", "--space", "nas-bench-macro", "--max-mflops", "60",
            "--data", "digits", "--epochs", "1", "--train-limit", "200", "--budget", "3", "--initial", "2", "-o", str(out)]
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = out / "trained.parquet"
    while not store.exists():
        assert job.poll() is None, "the search ended before its first net was trained"
        time.sleep(0.2)
    first = pd.read_parquet(store)
    os.killpg(job.pid, signal.SIGKILL)  # nasctl and the retrain in flight
    job.wait()
    assert len(first) == 1
    p = subprocess.run(args + ["--json"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    t = pd.read_parquet(store)
    assert len(t) == 3 == t["arch"].nunique() and (t["status"] == "ok").all()
    assert t.iloc[0].to_dict() == first.iloc[0].to_dict()  # kept, not trained again
    for d in t["dir"]:
        assert (pd.read_csv(f"{d}/metrics.csv")["epoch"] == [1]).all()  # each folder holds one whole run
    doc = json.loads(p.stdout)
    assert doc["arch"] == t.loc[t["top1"].idxmax(), "arch"] and "resuming: 1 trainer runs" in p.stderr


def test_a_design_of_one_net_still_spends_the_budget(nbm, tmp_path):
    """Under two trained nets there is no model yet: the next ones are uniform feasible draws."""
    nasctl("search", "--method", "predictor", "--space", "nas-bench-macro", "--max-mflops", "60", "--trainer", nbm["trainer"],
           "--budget", "4", "--initial", "1", "-o", tmp_path / "pg", check=0)
    t = pd.read_parquet(tmp_path / "pg" / "trained.parquet")
    assert len(t) == 4 == t["arch"].nunique()
    assert list(pd.read_csv(tmp_path / "pg" / "search.csv")["phase"]) == ["design", "design", "ei", "ei"]
