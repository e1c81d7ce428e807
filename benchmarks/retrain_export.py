"""Issue-6 figures: a short retrain on the built-in digits data, then export parity.

1. `nasctl retrain` of a proxyless arch on digits for --epochs epochs: top-1 per epoch.
2. ONNX parity (onnxruntime) and, where the [tflite] extra is installed, TFLite parity (LiteRT)
   for three archs: the one above, one full of skips and k7 kernels, and the largest.
Prints one JSON object. Usage: python benchmarks/retrain_export.py [--epochs 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pandas as pd

from clirun import nasctl

ARCHS = {
    "mixed": "k3_e6-k5_e3-skip-k3_e3-k5_e6-k3_e3-skip-k7_e3-k3_e6-k5_e3-k3_e3-skip-k5_e6-k3_e3-k7_e3-skip-k5_e6-k3_e3-skip-k7_e6-k3_e6",
    "skips_and_k7": "k7_e3-skip-skip-skip-k7_e6-skip-skip-skip-k7_e3-skip-skip-skip-k7_e6-skip-skip-skip-k7_e3-skip-skip-skip-k7_e6",
    "largest": "-".join(["k7_e6"] * 21),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-retrain"))
    a = ap.parse_args()
    out: dict = {"epochs": a.epochs, "data": "digits (10 classes, chance 10%)", "archs": {}}
    tflite = importlib.util.find_spec("litert_torch") is not None
    for name, arch in ARCHS.items():
        model = a.workdir / name
        epochs = a.epochs if name == "mixed" else 1
        s = nasctl("retrain", arch, "--space", "proxyless", "--data", "digits", "--epochs", epochs, "-o", model)
        m = pd.read_csv(model / "metrics.csv")
        r = {"arch": arch, "epochs": epochs, "top1_per_epoch": m["top1"].round(4).tolist(),
             "epoch_s_mean": float(m["time_s"].mean()), "device": s["device"]}
        r["onnx_parity"] = nasctl("export", model, "--format", "onnx", "-o", a.workdir / f"{name}.onnx")["parity_max_abs_diff"]
        if tflite:
            r["tflite_parity"] = nasctl("export", model, "--format", "tflite", "-o", a.workdir / f"{name}.tflite")["parity_max_abs_diff"]
        out["archs"][name] = r
    out["tflite"] = "measured" if tflite else "not measured: the [tflite] extra is not installed"
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
