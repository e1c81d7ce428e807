"""Issue-19 figures: Once-for-All on this machine, through the real CLI, resumable.

Steps (each result is kept in WORKDIR/ofa-bench.json and skipped on a rerun; a supernet whose
training stopped is resumed):
1. Devices: this CPU at 1 thread and at 2 threads (onnxruntime, proxyless at 224x224, batch 1).
   Each config's 300 measured rows (`fewshot.py local`'s eval-<config>.parquet, taken from
   --rows, else measured here) fit its latency predictor, cpu-1t.pt and cpu-2t.pt.
2. The supernet by progressive shrinking on Fashion-MNIST (--train-limit 5000, width 0.25,
   epochs 2,1,1,1, resolutions 24,28,32), and the same recipe with --naive.
3. `supernet eval --n N` rows of inherited subnets (held-out training images) fit the top-1
   predictor (held-out tau and RMSE from its fit report).
4. `supernet search` for both devices x 3 targets (the 25th/50th/75th percentile of each
   device's predicted latency over uniform archs), each net verified on its config.
5. One LightNAS `search` to the middle 1-thread target, as `search_quality.py` runs it (5
   epochs, train-limit 4000, width 0.25): its wall time against OFA's seconds per target.
6. The 1-thread nets on the Fashion-MNIST test set: inherited, fine-tuned (`retrain
   --from-supernet`, FT epochs at lr 0.01), and trained from scratch for the supernet's epochs
   plus FT (lr 0.05, the search_quality recipe otherwise); beside the random front of
   `benchmarks/results/search_quality.json` (same device config; its nets trained 3 epochs).
7. Largest and smallest subnet's test top-1 under progressive shrinking and under --naive.

Prints one JSON object. Usage:
    python benchmarks/ofa.py --workdir runs/ofa [--rows runs/fewshot4] [--n 150]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fewshot import CONFIGS, device_file

from clirun import nasctl

ROOT = Path(__file__).resolve().parents[1]
DEVICES = {"cpu-1t": "1t-b1", "cpu-2t": "2t-b1"}
SUPERNET = ["--data", "fashion-mnist", "--train-limit", 5000, "--width-mult", 0.25, "--epochs", "2,1,1,1", "--resolutions", "24,28,32"]
SUPERNET_EPOCHS = 5
FT_EPOCHS = 2
QUANTILES = (0.25, 0.5, 0.75)


class Cells:
    """The benchmark's finished steps, kept in one JSON file so a rerun skips them."""

    def __init__(self, path: Path):
        self.path = path
        self.done = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, make):
        if key not in self.done:
            t0 = time.time()
            value = make()
            self.done[key] = {"value": value, "wall_s": round(time.time() - t0, 1)}
            self.path.write_text(json.dumps(self.done, indent=1))
        return self.done[key]["value"]


def _supernet(w: Path, name: str, *extra) -> Path:
    out = w / name
    if (out / "supernet.pt").exists():
        return out
    if (out / "checkpoint.pt").exists():
        nasctl("supernet", "train", "--resume", out)
    else:
        nasctl("supernet", "train", *SUPERNET, *extra, "-o", out)
    return out


def _test_top1(model_dir: Path) -> float:
    from nasctl.data import load_data
    from nasctl.export import load_trained
    from nasctl.train.retrain import evaluate

    _, model, _ = load_trained(model_dir)
    return round(evaluate(model, load_data("fashion-mnist", train_limit=5000).val, torch.device("cpu"), 512)["top1"], 4)


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("runs/ofa"))
    ap.add_argument("--rows", type=Path, default=Path("runs/fewshot4"), help="where fewshot.py local left eval-<config>.parquet")
    ap.add_argument("--n", type=int, default=150, help="inherited subnets scored for the accuracy predictor")
    a = ap.parse_args()
    w = a.workdir
    w.mkdir(parents=True, exist_ok=True)
    cells = Cells(w / "ofa-bench.json")
    t0 = time.time()

    # 1. device predictors
    profiles, preds = {}, {}
    for dev, cfg in DEVICES.items():
        profiles[dev] = device_file(w, cfg, CONFIGS[cfg])
        rows = w / f"eval-{cfg}.parquet"
        if not rows.exists() and (a.rows / rows.name).exists():
            shutil.copy(a.rows / rows.name, rows)
        elif not rows.exists():
            if not (w / "eval.parquet").exists():
                nasctl("sample", "--space", "proxyless", "--n", 300, "--seed", 0, "--stratify", "macs", "-o", w / "eval.parquet")
            nasctl("profile", "--device", profiles[dev], "--archs", w / "eval.parquet", "-o", rows, ok=(0, 1))
        preds[dev] = w / f"{dev}.pt"
        cells.get(f"fit-{dev}", lambda rows=rows, dev=dev: nasctl("fit-predictor", rows, "-o", preds[dev])["test"]["default"])
    # 2. supernets
    ps = _supernet(w, "supernet")
    # 3. accuracy predictor
    acc_rows, acc = w / f"acc-{a.n}.parquet", w / f"acc-{a.n}.pt"
    cells.get("eval", lambda: nasctl("supernet", "eval", ps, "--n", a.n, "-o", acc_rows))
    test = cells.get("fit-acc", lambda: nasctl("fit-predictor", acc_rows, "--metric", "top1", "-o", acc)["test"]["default"])
    # 4. OFA search, verified
    targets = cells.get("targets", lambda: _targets(preds))
    ofa = cells.get("ofa", lambda: _ofa(w, ps, acc, preds, profiles, targets))
    # 5. LightNAS, one search to the middle 1-thread target
    mid = targets["cpu-1t"][1]
    light = cells.get("lightnas", lambda: nasctl(
        "search", "--method", "lightnas", "--data", "fashion-mnist", "--train-limit", 4000, "--width-mult", 0.25, "--epochs", 5,
        "--predictor", preds["cpu-1t"], "--target-ms", mid, "-o", w / "lightnas"))
    per_target = [r["search_s"] for r in ofa["results"]]
    with_weights = [r["search_s"] + r["extract_s"] for r in ofa["results"]]
    cost = {"lightnas_search_s": round(light["wall_s"], 1), "ofa_search_s_mean": round(float(np.mean(per_target)), 2),
            "ofa_search_and_weights_s_mean": round(float(np.mean(with_weights)), 2),
            "ratio_search": round(light["wall_s"] / float(np.mean(per_target)), 1),
            "ratio_search_and_weights": round(light["wall_s"] / float(np.mean(with_weights)), 1),
            "goal_50x": light["wall_s"] / float(np.mean(per_target)) >= 50}
    # 6. inherited, fine-tuned, scratch on the test set, for the 1-thread nets
    nets = [r for r in ofa["results"] if r["device"] == "cpu-1t"]
    weights = {r["pair"]: cells.get(f"weights-{r['pair']}", lambda r=r: _weights(w, ps, Path(r["output"]))) for r in nets}
    # 7. progressive shrinking against naive
    naive = _supernet(w, "supernet-naive", "--naive")
    ends = cells.get("ends", lambda: _ends(w, {"progressive": ps, "naive": naive}))
    front = json.loads((ROOT / "benchmarks/results/search_quality.json").read_text())["front"]
    placed = {}
    for r in nets:
        m = r.get("measured", r["predicted"])
        near = [f["top1"] for f in front if abs(f["latency_ms"] / m - 1) <= 0.05]
        placed[r["pair"]] = {"measured_ms": m, "front_within_5pct": near, "front_max": max(near) if near else None, **weights[r["pair"]]}
    trained_s = {n: round(float(pd.read_csv(w / n / "metrics.csv")["time_s"].sum())) for n in ("supernet", "supernet-naive")
                 if (w / n / "metrics.csv").exists()}
    return {
        "device": "AMD EPYC, onnxruntime, proxyless 224x224 batch 1: cpu-1t = 1 thread, cpu-2t = 2 threads",
        "supernet": {"args": " ".join(map(str, SUPERNET)), "train_s": trained_s},
        "latency_predictors_heldout": {dev: cells.done[f"fit-{dev}"]["value"] for dev in DEVICES},
        "accuracy_predictor": {"rows": a.n, "eval_wall_s": cells.done["eval"]["wall_s"],
                               **{k: test.get(k) for k in ("kendall_tau", "spearman_rho", "rmse", "mape") if k in test}},
        "targets_ms": targets,
        "targets_hit": [{k: r.get(k) for k in ("pair", "arch_id", "predicted", "measured", "gap", "met", "verify_status",
                                               "predicted_top1", "top1_heldout", "search_s", "extract_s")} | {"rounds": len(r["verify"])}
                        for r in ofa["results"]],
        "goal_all_within_3pct": all(r.get("met") for r in ofa["results"]),
        "cost_per_target": cost,
        "inherited_vs_finetune_vs_scratch": placed,
        "progressive_vs_naive": ends,
        "wall_s_this_run": round(time.time() - t0),
    }


def _targets(preds: dict) -> dict:
    from nasctl.predict import Predictor
    from nasctl.space.sample import sample

    out = {}
    for dev, path in preds.items():
        p = Predictor.load(path)
        lat = p.predict_indices(sample(p.space(), 5000, 3))[0]
        out[dev] = [round(float(np.quantile(lat, q)), 1) for q in QUANTILES]
    return out


def _ofa(w: Path, ps: Path, acc: Path, preds: dict, profiles: dict, targets: dict) -> dict:
    out = w / "deploy"
    args = ["supernet", "search", ps, "--accuracy", acc, "-o", out]
    for dev in preds:
        args += ["--predictor", preds[dev], "--target-ms", f"{dev}={','.join(map(str, targets[dev]))}", "--verify", f"{dev}={profiles[dev]}"]
    return nasctl(*args, ok=(0, 1, 4))


def _weights(w: Path, ps: Path, net: Path) -> dict:
    """Test top-1: inherited as it is, fine-tuned FT epochs, and from scratch for the same total."""
    ft, scratch = w / "finetune" / net.name, w / "scratch" / net.name
    common = ["--data", "fashion-mnist", "--train-limit", 5000, "--batch", 64]
    if not (ft / "model.pt").exists():
        nasctl("retrain", net, *common, "--from-supernet", ps, "--epochs", FT_EPOCHS, "--lr", 0.01, "--warmup-epochs", 0, "-o", ft)
    if not (scratch / "model.pt").exists():
        nasctl("retrain", net, *common, "--epochs", SUPERNET_EPOCHS + FT_EPOCHS, "--lr", 0.05, "-o", scratch)
    return {"inherited": _test_top1(net), f"finetuned_{FT_EPOCHS}ep": _test_top1(ft), f"scratch_{SUPERNET_EPOCHS + FT_EPOCHS}ep": _test_top1(scratch)}


def _ends(w: Path, supernets: dict) -> dict:
    from nasctl.ofa.elastic import new_supernet
    from nasctl.ofa.shrink import read_record

    out = {}
    for name, path in supernets.items():
        space, _, _ = read_record(path)
        _, el = new_supernet(space)
        for end, idx in (("largest", el.largest()), ("smallest", el.smallest("expand"))):
            d = w / "ends" / f"{name}-{end}"
            got = nasctl("supernet", "extract", path, "--arch", space.from_indices(idx).string, "-o", d)
            out[f"{name}_{end}"] = {"test_top1": _test_top1(d), "heldout_top1": round(got["top1_heldout"], 4)}
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
