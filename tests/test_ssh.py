"""Profiling through real OpenSSH: a device host in a network namespace (see devicehost.py)."""

import json
import threading

import pandas as pd
import pytest

from conftest import ctrl_c_mid_profile, nasctl, small_archs
from devicehost import DEVICE_PYTHON, DeviceHost, unavailable
from nasctl.device import load_device
from nasctl.profile import Store, profile_archs
from nasctl.space.archfile import read_archs
from test_profile import SCHEMA

why = unavailable()
pytestmark = pytest.mark.skipif(why is not None, reason=f"SSH device host: {why}")


@pytest.fixture(scope="module")
def host():
    h = DeviceHost()
    yield h
    h.close()


@pytest.fixture
def board(host, tmp_path):
    host.set_mode("MAXN")
    host.set_rails_mw(VDD_IN=4000)
    return host.profile(tmp_path / "board.toml")


@pytest.fixture
def archs(tmp_path):
    return small_archs(tmp_path / "archs.parquet", 8, seed=1)


def test_rows_arrive_with_the_local_schema_and_energy_is_rail_power_times_time(host, board, archs, tmp_path):
    out = tmp_path / "lat.parquet"
    s = json.loads(nasctl("profile", "--device", board, "--archs", archs, "-o", out, "--json", check=0).stdout)
    assert (s["measured"], s["errors"], s["reconnects"]) == (8, 0, 0)
    df = pd.read_parquet(out)
    assert SCHEMA <= set(df.columns) and df["arch_id"].is_unique and (df["status"] == "ok").all()
    assert (df["transport"] == "ssh").all() and (df["energy_source"] == "ina3221:iio").all()
    assert (df["power_mode"] == "MAXN").all() and df["energy_note"].isna().all()
    expected = 4.0 * df["timed_s"] * 1e3 / df["n_runs"]  # 4 W over the timed runs, per inference
    assert ((df["energy_mj"] / expected - 1).abs() < 0.01).all()
    assert ((df["power_w_mean"] - 4.0).abs() < 0.01).all()

    again = json.loads(nasctl("profile", "--device", board, "--archs", archs, "-o", out, "--json", check=0).stdout)
    assert (again["measured"], again["skipped"]) == (0, 8)


def test_energy_follows_the_power_the_test_sets(host, board, archs, tmp_path):
    space, arch_list = read_archs(archs, None)
    watts = [2.5, 6.0, 3.0, 9.0, 2.5, 6.0, 3.0, 9.0]
    host.set_rails_mw(VDD_IN=watts[0] * 1e3, VDD_CPU=1234)  # the input rail is the total
    seen = []

    def next_power(row):  # runs before the next arch is timed
        seen.append(row)
        if len(seen) < len(watts):
            host.set_rails_mw(VDD_IN=watts[len(seen)] * 1e3, VDD_CPU=1234)

    profile_archs(arch_list, space, load_device(str(board)), Store(tmp_path / "e.parquet"), on_row=next_power)
    got = [r["power_w_mean"] for r in seen]
    assert got == pytest.approx(watts, rel=1e-3)
    for r, w in zip(seen, watts):
        assert r["energy_mj"] == pytest.approx(w * r["timed_s"] * 1e3 / r["n_runs"], rel=1e-3)


def test_a_cut_link_mid_stream_loses_and_duplicates_nothing(host, board, archs, tmp_path):
    space, arch_list = read_archs(archs, None)
    store, rows, notes = Store(tmp_path / "cut.parquet"), [], []

    def cut_after_two(row):
        rows.append(row["arch_id"])
        if len(rows) == 2:  # the next request and its row are on the wire while the link is down
            host.link(up=False)

    def note(text):  # the link comes back once nasctl has seen it lost, however long that took under load
        notes.append(text)
        if "reconnecting" in text:
            threading.Timer(0.5, host.link, kwargs={"up": True}).start()

    try:  # a note that never comes ends the run after reconnect_s (60 s), with an error
        s = profile_archs(arch_list, space, load_device(str(board)), store, on_row=cut_after_two, on_note=note)
    finally:
        host.link(up=True)
    df = pd.read_parquet(tmp_path / "cut.parquet")
    assert s.reconnects >= 1 and any("reconnecting" in n for n in notes)
    assert len(rows) == len(df) == 8 and df["arch_id"].is_unique and (df["status"] == "ok").all()
    assert set(df["arch_id"]) == {a.id for a in arch_list}


def test_ctrl_c_mid_stream_stores_nothing_for_the_arch_in_flight(board, tmp_path):
    ctrl_c_mid_profile(board, tmp_path)


def test_check_reports_the_device_and_measures_nothing(board):
    p = nasctl("profile", "--device", board, "--check", "--json", check=0)
    (facts,) = json.loads(p.stdout)["hosts"]
    assert facts["power_mode"] == "MAXN" and facts["energy_source"] == "ina3221:iio"
    assert facts["runtime"] == "onnxruntime" and facts["runtime_version"] and facts["energy_rails"] == ["VDD_IN"]


def test_a_board_not_in_maxn_is_refused(host, board, archs, tmp_path):
    host.set_mode("MODE_15W")
    out = tmp_path / "lat.parquet"
    p = nasctl("profile", "--device", board, "--archs", archs, "-o", out, check=2)
    assert "power mode MODE_15W, the profile requires MAXN" in p.stderr and not out.exists()


def test_host_keys_are_checked(host, board, tmp_path):
    unknown = host.profile(tmp_path / "unknown.toml", known_hosts=str(tmp_path / "empty_known_hosts"))
    p = nasctl("profile", "--device", unknown, "--check", check=2)
    assert "host key unknown" in p.stderr and "--trust-new-host-key" in p.stderr

    nasctl("profile", "--device", unknown, "--check", "--trust-new-host-key", check=0)
    assert host.address in (tmp_path / "empty_known_hosts").read_text()  # trusted once, saved
    nasctl("profile", "--device", unknown, "--check", check=0)

    other = tmp_path / "other_known_hosts"  # a different key on record for that address
    line = host.known_hosts.read_text().split()
    impostor = (host.dir / "client_ed25519.pub").read_text().split()
    other.write_text(f"{line[0]} {impostor[0]} {impostor[1]}\n")
    changed = host.profile(tmp_path / "changed.toml", known_hosts=str(other))
    for extra in ([], ["--trust-new-host-key"]):  # a changed key is never trusted
        p = nasctl("profile", "--device", changed, "--check", *extra, check=2)
        assert "host key CHANGED" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_a_bad_key_fails_clearly(host, tmp_path):
    import subprocess

    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    p = nasctl("profile", "--device", host.profile(tmp_path / "b.toml", key=str(stranger)), "--check", check=2)
    assert "authentication failed" in p.stderr and "Traceback" not in p.stderr
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    p = nasctl("profile", "--device", host.profile(tmp_path / "j.toml", key=str(junk)), "--check", check=2)
    assert "ssh key" in p.stderr and "Traceback" not in p.stderr


def test_paths_reach_the_agent_quoted_never_through_a_shell(host, tmp_path, archs):
    marker = host.home / "pwned"
    board = host.profile(tmp_path / "q.toml", workdir=".nasctl $(touch pwned); touch pwned")
    host.set_mode("MAXN")
    out = tmp_path / "q.parquet"
    nasctl("profile", "--device", board, "--archs", archs, "-o", out, check=0)
    assert len(pd.read_parquet(out)) == 8 and not marker.exists()


def test_an_unreachable_board_exits_3(host, tmp_path):
    board = host.profile(tmp_path / "u.toml", connect_timeout_s=1.0)
    host.link(up=False)
    try:
        p = nasctl("profile", "--device", board, "--check", check=3)
    finally:
        host.link(up=True)
    assert host.address in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_a_trt_engine_is_built_on_the_device_and_fetched_with_its_log(host, tmp_path):
    """`export --format trt --device`: ONNX up, trtexec (a stand-in printing TensorRT's documented
    log) on the board, engine and build log back, version and GPU in the sidecar."""
    from test_export import TINY, TRTEXEC_LOG

    calls = host.bin / "trtexec.calls"
    (host.bin / "trtexec").write_text(f"""#!{DEVICE_PYTHON}
import hashlib, json, sys
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
open("/usr/local/bin/trtexec.calls", "a").write(json.dumps(sys.argv[1:]) + "\\n")
onnx = open(opts["onnx"], "rb").read()
open(opts["saveEngine"], "wb").write(b"ENGINE" + hashlib.sha256(onnx).digest())
print({TRTEXEC_LOG!r})
""")
    (host.bin / "trtexec").chmod(0o755)
    calls.touch()
    calls.chmod(0o666)  # the stand-in runs as the device user
    model = tmp_path / "model"
    nasctl("retrain", "k7_e6-skip-k5_e3-skip", "--space", TINY, "--epochs", 1, "-o", model, check=0)
    board = host.profile(tmp_path / "jetson.toml", runtime="tensorrt", precision="fp16")
    out = tmp_path / "model.engine"
    info = json.loads(nasctl("export", model, "--format", "trt", "--device", board, "-o", out, "--json", check=0).stdout)
    (argv,) = [json.loads(line) for line in calls.read_text().splitlines()]
    assert "--fp16" in argv and "--shapes=input:1x3x32x32" in argv and "--memPoolSize=workspace:1024M" in argv
    assert out.read_bytes().startswith(b"ENGINE") and len(out.read_bytes()) == 6 + 32
    assert "&&&& PASSED TensorRT.trtexec" in (tmp_path / "model.engine.build.log").read_text()
    side = json.loads((tmp_path / "model.engine.json").read_text())
    assert side["tensorrt_version"] == "8.5.2" and side["gpu"] == "Xavier" and side["precision"] == "fp16"
    assert side == {k: info[k] for k in side} and side["device"] == "testboard"


@pytest.mark.timing
def test_a_fleet_shares_the_archs_out_one_stream_per_board(host, tmp_path, archs):
    second = DeviceHost(index=1, client_key=host.key)
    try:
        for h in (host, second):
            h.set_mode("MAXN")
            h.set_rails_mw(VDD_IN=4000)
        known = tmp_path / "known_hosts"
        known.write_text(host.known_hosts.read_text() + second.known_hosts.read_text())
        board = host.profile(tmp_path / "fleet.toml", known_hosts=str(known))
        out = tmp_path / "fleet.parquet"
        hosts = [x for h in (host, second) for x in ("--host", f"{h.user}@{h.address}:2222")]
        s = json.loads(nasctl("profile", "--device", board, *hosts, "--archs", archs, "-o", out, "--json", check=0).stdout)
        df = pd.read_parquet(out)
        assert s["measured"] == 8 and df["arch_id"].is_unique and df["config_id"].nunique() == 1
        per_board = df["host"].value_counts()
        assert set(per_board.index) == {host.netns, second.netns} and per_board.min() >= 1
    finally:
        second.close()


def test_a_throttled_board_is_marked_and_measured_again_once_cool(host, board, tmp_path):
    """The board's /sys/class/thermal and cpufreq are the test's tmpfs: a clock capped at 55% marks
    each row throttled (exit 1, never fitted); cool again, --retry-errors measures them for real."""
    archs = tmp_path / "a.parquet"
    small_archs(archs, 2, seed=3)
    out = tmp_path / "t.parquet"
    host.set_thermal(92.0, passive_trip_c=95.0)
    host.set_cpu_clock(0.55)
    try:
        p = nasctl("profile", "--device", board, "--archs", archs, "-o", out, "--json", check=1)
        assert json.loads(p.stdout)["throttled"] == 2
        df = pd.read_parquet(out)
        assert (df["status"] == "throttled").all() and df["throttled"].all() and (df["clock_ratio"] == 0.55).all()
        assert (df["temp_c"] == 92.0).all() and df["throttle_reason"].str.contains("CPU clock at 55%").all()
        host.set_cpu_clock(1.0)
        again = json.loads(nasctl("profile", "--device", board, "--archs", archs, "-o", out, "--retry-errors", "--json",
                                  check=0).stdout)
        assert (again["measured"], again["throttled"]) == (2, 0)
        assert (pd.read_parquet(out)["status"] == "ok").all()
    finally:
        host.set_cpu_clock(1.0)
