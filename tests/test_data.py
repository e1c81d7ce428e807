"""The idx reader (Fashion-MNIST, MNIST) and the class-balanced --train-limit subset."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import nasctl
from nasctl.data import load_data
from nasctl.data.datasets import FASHION_MNIST, balanced_subset
from nasctl.errors import UserError


def idx(x: np.ndarray) -> bytes:
    """An idx file of uint8 `x`, written from the format's definition (not by the reader's code)."""
    return bytes([0, 0, 8, x.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in x.shape) + x.astype(np.uint8).tobytes()


def write_set(folder, n_train=50, n_test=20, gz=False, sep="-"):
    """Four idx files with a pattern the test can recognise: image i is filled with i % 256."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = (np.arange(n)[:, None, None] % 256 * np.ones((1, 28, 28))).astype(np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        y[:10] = np.arange(10)  # every class present
        arrays[stem] = (x, y)
        for kind, a, nd in (("images", x, 3), ("labels", y, 1)):
            data = idx(a)
            name = f"{stem}-{kind}{sep}idx{nd}-ubyte"
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz,sep", [(False, "-"), (True, "-"), (False, ".")])
def test_idx_files_load_with_their_own_split_and_labels(tmp_path, gz, sep):
    arrays = write_set(tmp_path / "m", gz=gz, sep=sep)
    d = load_data(f"mnist:{tmp_path / 'm'}", resolution=28)
    assert (len(d.train), len(d.val), d.num_classes, d.resolution) == (50, 20, 10, 28)
    x, y = d.train.tensors
    assert x.shape == (50, 3, 28, 28)
    assert torch.equal(y, torch.as_tensor(arrays["train"][1], dtype=torch.long))
    # image i holds the value i: after scaling and normalising, the order and the values are kept
    raw = (x[:, 0, 0, 0] * 0.25 + 0.5) * 255
    assert torch.allclose(raw, torch.arange(50, dtype=torch.float32), atol=1e-3)
    assert torch.equal(d.val.tensors[1], torch.as_tensor(arrays["t10k"][1], dtype=torch.long))


def test_corrupt_idx_files_are_refused_with_the_reason(tmp_path):
    write_set(tmp_path / "m")
    f = tmp_path / "m" / "train-images-idx3-ubyte"
    good = f.read_bytes()
    f.write_bytes(b"\x00\x00\x08\x02" + good[4:])
    with pytest.raises(UserError, match="magic 00000802"):
        load_data(f"mnist:{tmp_path / 'm'}")
    f.write_bytes(good[:-5])  # truncated: the header's count no longer matches
    with pytest.raises(UserError, match="the header says 50 x 28 x 28 = 39200 bytes, the file holds 39195"):
        load_data(f"mnist:{tmp_path / 'm'}")
    f.write_bytes(good)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="missing t10k-labels-idx1-ubyte"):
        load_data(f"mnist:{tmp_path / 'm'}")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="cannot read it"):
        load_data(f"fashion-mnist:{tmp_path / 'm'}")


def test_labels_that_disagree_with_the_images_are_refused(tmp_path):
    write_set(tmp_path / "m")
    (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(idx(np.zeros(49, np.uint8)))
    with pytest.raises(UserError, match="train has 50 images and 49 labels"):
        load_data(f"mnist:{tmp_path / 'm'}")


def test_balanced_subset_is_even_seeded_and_fills_from_the_other_classes():
    y = np.repeat(np.arange(10), 100)
    keep = balanced_subset(y, 35, seed=0)
    assert len(keep) == len(set(keep)) == 35
    assert sorted(np.bincount(y[keep], minlength=10)) == [3] * 5 + [4] * 5
    assert np.array_equal(keep, balanced_subset(y, 35, seed=0))
    assert not np.array_equal(keep, balanced_subset(y, 35, seed=1))
    skewed = np.concatenate([np.zeros(2, int), np.repeat(np.arange(1, 10), 50)])
    counts = np.bincount(skewed[balanced_subset(skewed, 100, seed=0)], minlength=10)
    assert counts[0] == 2 and counts.sum() == 100 and counts[1:].max() - counts[1:].min() <= 1
    with pytest.raises(UserError, match="between 10"):
        balanced_subset(y, 9, seed=0)


def test_train_limit_keeps_val_whole_and_names_itself(tmp_path):
    write_set(tmp_path / "m", n_train=200)
    d = load_data(f"mnist:{tmp_path / 'm'}", train_limit=30)
    assert (len(d.train), len(d.val)) == (30, 20)
    assert d.name == "mnist (train-limit 30)"
    assert np.bincount(d.train.tensors[1].numpy(), minlength=10).tolist() == [3] * 10


def test_cli_refuses_bad_data_in_one_line_and_writes_nothing(tmp_path):
    write_set(tmp_path / "m")
    (tmp_path / "m" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00")
    for spec, expect in ((f"mnist:{tmp_path / 'm'}", "not an idx3 file"), (f"mnist:{tmp_path / 'nope'}", "no such folder")):
        p = nasctl("retrain", "k3_e3-" * 20 + "k3_e3", "--data", spec, "-o", tmp_path / "run", "--epochs", "1")
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and expect in p.stderr, p.stderr
        assert not (tmp_path / "run").exists()


def test_missing_package_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr("nasctl.data.datasets.FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist")


def test_retrain_records_limit_and_width_and_scores_when_asked(tmp_path):
    write_set(tmp_path / "m", n_train=120)
    run = tmp_path / "run"
    args = ["--data", f"mnist:{tmp_path / 'm'}", "--train-limit", "40", "--width-mult", "0.25", "--eval-every", "2", "--batch", "8"]
    out = json.loads(nasctl("retrain", "k3_e3-" * 20 + "k3_e3", "--epochs", "3", "-o", run, *args, "--json", "-q", check=0).stdout)
    doc = json.loads((run / "run.json").read_text())
    assert (doc["train_limit"], doc["width_mult"], out["data"]) == (40, 0.25, "mnist (train-limit 40)")
    assert json.loads((run / "arch.json").read_text())["params"]["width_mult"] == 0.25
    scored = pd.read_csv(run / "metrics.csv").top1.notna().tolist()
    assert scored == [False, True, True]  # every 2nd epoch, and the last


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_the_debian_fashion_mnist_is_the_real_one():
    d = load_data("fashion-mnist", resolution=28)
    assert (len(d.train), len(d.val), d.num_classes) == (60_000, 10_000, 10)
    assert np.bincount(d.train.tensors[1].numpy()).tolist() == [6000] * 10
    assert np.bincount(d.val.tensors[1].numpy()).tolist() == [1000] * 10
