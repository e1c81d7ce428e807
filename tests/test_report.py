"""report: the HTML page of a real (small) run, opened in a real headless Chromium."""

import json

import pytest

from browser import chromium, load_page
from conftest import DATA, nasctl

TINY = str(DATA / "tiny.toml")
FAST = ["--space", TINY, "--resolution", "16", "--epochs", "3", "--warmup-epochs", "1", "--batch", "32", "--train-limit", "300", "-q"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """sample -> profile -> fit -> search (lightnas + verify, random) -> retrain, like quickstart."""
    r = tmp_path_factory.mktemp("run")
    nasctl("sample", "--space", TINY, "--n", 30, "--seed", 1, "-o", r / "archs.parquet", check=0)
    nasctl("profile", "--device", DATA / "fast-cpu.toml", "--archs", r / "archs.parquet", "-o", r / "latency.parquet", "-q", check=0)
    nasctl("fit-predictor", r / "latency.parquet", "--members", 2, "-o", r / "predictor.pt", "-q", check=0)
    target = json.loads(nasctl("predict", r / "predictor.pt", r / "archs.parquet", "--json", check=0).stdout)["median"]
    common = ["--predictor", r / "predictor.pt", "--target-ms", round(target, 3), *FAST, "--verify", DATA / "fast-cpu.toml", "--tolerance", "0.5"]
    nasctl("search", *common, "-o", r / "search", check=0)
    nasctl("search", *common, "--method", "random", "--candidates", 2, "-o", r / "random", check=0)
    nasctl("retrain", r / "search" / "arch.json", "--epochs", 1, "--batch", 32, "--train-limit", 300, "-o", r / "model", "-q", check=0)
    return r


def test_report_has_every_section(run):
    s = json.loads(nasctl("report", run, "--json", check=0).stdout)
    assert s["output"] == str(run / "report.html")
    titles = "\n".join(s["sections"])
    for part in ("Latency of the sampled archs", "Predictor predictor.pt", "Search search (lightnas)", "Search random (random)",
                 "Accuracy against latency", "layer strips", "Measured against predicted", "Retrain model",
                 "Device drift (latency.parquet)"):
        assert part in titles, titles
    page = (run / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 8  # self-contained: nothing to fetch
    assert "4 reference timings (4 ok)" in page and "0 throttled rows" in page  # 3 at the start, 1 after 20 archs


@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (tests/setup-hosts.sh installs Debian's as root)")
def test_report_renders_in_headless_chromium(run, tmp_path):
    nasctl("report", run, "-q", check=0)
    shot = run / "report.png"
    r = load_page((run / "report.html").as_uri(), str(shot))
    assert r["title"].startswith("nasctl report")
    assert r["errors"] == []
    assert len(r["images"]) == 8 and all(done and w > 0 and h > 0 for done, w, h in r["images"]), r["images"]
    from PIL import Image

    img = Image.open(shot)
    assert img.size[1] >= 2000  # the whole page, beyond the viewport
    assert len(img.convert("L").getcolors(1 << 16) or []) > 50  # figures, not a blank page


def test_report_of_a_folder_with_nothing_to_report(tmp_path):
    p = nasctl("report", tmp_path, check=2)
    assert "nothing to report" in p.stderr and len(p.stderr.strip().splitlines()) == 1
