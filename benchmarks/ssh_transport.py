"""Issue-3 figures for the SSH transport, printed as one JSON object. Needs root (see tests/devicehost.py).

1. rows/min through SSH against local for the same 30 proxyless archs (224x224, batch 1, the
   local-cpu protocol); the "board" is this machine behind real sshd in a network namespace, so
   the difference is the transport's cost (SFTP uploads, the protocol over SSH, reconnect logic);
2. link cut: the veth link goes down for 5 s in the middle of a 12-arch run: rows lost, duplicated;
3. energy: INA3221 rail power set by the benchmark (changed between archs), against the
   integrated mJ per inference: error %.

Usage: sudo python benchmarks/ssh_transport.py [--workdir runs/bench-ssh]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import tomllib
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from clirun import nasctl  # noqa: E402
from devicehost import DeviceHost, unavailable  # noqa: E402
from nasctl.device import load_device  # noqa: E402
from nasctl.profile import Store, profile_archs  # noqa: E402
from nasctl.space.archfile import read_archs  # noqa: E402


def board_profile(host: DeviceHost, work: Path) -> Path:
    """local-cpu's measurement settings, reached over SSH, with the board's INA3221 rails.

    The host exporting the next models runs on this same CPU, which a real board never sees: the
    board keeps the rows it times under that load (no retiming) instead of marking them disturbed.
    """
    local = (Path(__file__).resolve().parents[1] / "profiles" / "local-cpu.toml").read_text()
    body = local.split("[model]", 1)[1].split("[energy]", 1)[0]
    body = re.sub(r"max_other_busy = [\d.]+", "max_other_busy = 1.0", body)
    ssh = tomllib.loads(host.profile(work / "tmp.toml").read_text())["ssh"]
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in ssh.items())
    path = work / "board.toml"
    path.write_text(f'name = "board"\ntransport = "ssh"\nruntime = "onnxruntime"\n[ssh]\n{table}\n'
                    f'[model]{body}[energy]\nsource = "ina3221"\nperiod_s = 0.005\n')
    return path


def throughput(work: Path, board: Path) -> dict:
    archs = work / "t-archs.parquet"
    nasctl("sample", "--n", 30, "--seed", 300, "-o", archs)
    out = {}
    for name, device in (("local", "local-cpu"), ("ssh", board)):
        rows = work / f"t-{name}.parquet"
        rows.unlink(missing_ok=True)
        t0 = time.perf_counter()
        s = nasctl("profile", "--device", device, "--archs", archs, "-o", rows)
        wall = time.perf_counter() - t0
        out[name] = {"archs": s["measured"], "rows_per_min": 60 * s["measured"] / wall, "wall_s": wall,
                     "timed_s": s["timed_s"], "overhead": 1 - s["timed_s"] / wall,
                     "median_latency_ms": float(pd.read_parquet(rows)["latency_ms"].median())}
    a = pd.read_parquet(work / "t-local.parquet").set_index("arch_id")["latency_ms"]
    b = pd.read_parquet(work / "t-ssh.parquet").set_index("arch_id")["latency_ms"].loc[a.index]
    out["ssh_over_local_wall"] = out["ssh"]["wall_s"] / out["local"]["wall_s"]
    out["latency_median_rel_diff"] = float(((b - a).abs() / a).median())
    return out


def link_cut(work: Path, host: DeviceHost, board: Path) -> dict:
    archs = work / "c-archs.parquet"
    nasctl("sample", "--n", 12, "--seed", 301, "-o", archs)
    space, arch_list = read_archs(archs, None)
    out = work / "c-rows.parquet"
    out.unlink(missing_ok=True)
    received = []

    def cut(row):
        received.append(row["arch_id"])
        if len(received) == 4:
            host.link(up=False)
            threading.Timer(5.0, host.link, kwargs={"up": True}).start()

    t0 = time.perf_counter()
    s = profile_archs(arch_list, space, load_device(str(board)), Store(out), on_row=cut)
    df = pd.read_parquet(out)
    return {"archs": len(arch_list), "cut_s": 5.0, "reconnects": s.reconnects, "wall_s": time.perf_counter() - t0,
            "rows": len(df), "rows_lost": len({a.id for a in arch_list} - set(df["arch_id"])),
            "rows_duplicated": len(df) - df["arch_id"].nunique(), "status": df["status"].value_counts().to_dict()}


def energy(work: Path, host: DeviceHost, board: Path) -> dict:
    archs = work / "e-archs.parquet"
    nasctl("sample", "--n", 10, "--seed", 302, "--resolution", 64, "-o", archs)
    space, arch_list = read_archs(archs, None)
    watts = [2.5, 7.0, 4.0, 11.0, 3.3, 5.5, 9.0, 2.0, 6.0, 8.0]
    host.set_rails_mw(VDD_IN=watts[0] * 1e3, VDD_CPU=800, VDD_GPU=1500)
    rows = []

    def step(row):
        rows.append(row)
        if len(rows) < len(watts):
            host.set_rails_mw(VDD_IN=watts[len(rows)] * 1e3, VDD_CPU=800, VDD_GPU=1500)

    out = work / "e-rows.parquet"
    out.unlink(missing_ok=True)
    profile_archs(arch_list, space, load_device(str(board)), Store(out), on_row=step)
    errs = [abs(r["energy_mj"] / (w * r["timed_s"] * 1e3 / r["n_runs"]) - 1) for r, w in zip(rows, watts)]
    return {"archs": len(rows), "set_watts": watts, "power_w_mean": [r["power_w_mean"] for r in rows],
            "energy_mj": [r["energy_mj"] for r in rows], "max_rel_error": max(errs),
            "mean_rel_error": sum(errs) / len(errs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-ssh"))
    a = ap.parse_args()
    if why := unavailable():
        sys.exit(f"cannot make the SSH device host: {why}")
    a.workdir.mkdir(parents=True, exist_ok=True)
    host = DeviceHost()
    try:
        host.set_rails_mw(VDD_IN=5000)
        board = board_profile(host, a.workdir)
        print(json.dumps({"throughput": throughput(a.workdir, board), "link_cut": link_cut(a.workdir, host, board),
                          "energy": energy(a.workdir, host, board)}, indent=2))
    finally:
        host.close()


if __name__ == "__main__":
    main()
