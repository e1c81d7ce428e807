"""Datasets as tensors in memory, named by a spec string; nothing is ever downloaded.

- `digits`: scikit-learn's 1,797 handwritten digits (8x8, 10 classes), shipped inside the
  package, upsampled to 32x32 RGB so the spaces' CIFAR macros apply. The built-in CPU default.
- `fashion-mnist`: Zalando's Fashion-MNIST as Debian ships it (`apt-get install
  dataset-fashion-mnist`): 60k train / 10k test, 28x28 grey (kept at 28 unless a resolution is
  given), 10 classes. Real images that separate architectures, where digits cannot.
- `fashion-mnist:PATH`, `mnist:PATH`: any folder of the four idx files, gzipped or not.
- `cifar10:PATH`: the CIFAR-10 "python version" folder (data_batch_1..5, test_batch).
- `imagefolder:PATH`: PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg (e.g. ImageNet-100),
  resized to --resolution.

Every dataset gives a train and a val split (the dataset's own test set where it has one); a
search splits train again for its bi-level steps and never sees val. `train_limit` keeps a
seeded, class-balanced subset of train, for CPU budgets; the Data's name then says so.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from nasctl.errors import UserError

MEAN, STD = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # where dataset-fashion-mnist puts its files


@dataclass
class Data:
    name: str
    train: TensorDataset
    val: TensorDataset
    num_classes: int
    resolution: int


def _tensors(x: np.ndarray, y: np.ndarray, resolution: int) -> TensorDataset:
    """uint8/float NHWC or NCHW images -> normalized float NCHW at `resolution`."""
    t = torch.as_tensor(x, dtype=torch.float32)
    if t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    if t.max() > 1.5:
        t = t / 255.0
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.shape[-1] != resolution:
        t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return TensorDataset(((t - MEAN) / STD).contiguous(), torch.as_tensor(y, dtype=torch.long))


def _digits(resolution: int) -> Data:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0)[:, None].astype(np.float32)  # values 0..16
    perm = np.random.default_rng(0).permutation(len(x))  # fixed split: runs stay comparable
    nv = len(x) // 5
    v, t = perm[:nv], perm[nv:]
    return Data("digits", _tensors(x[t], d.target[t], resolution), _tensors(x[v], d.target[v], resolution), 10, resolution)


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's batches are pickles, and a pickle can name any callable to run. Admit only what
    the real files hold: numpy arrays (rebuilt by these helpers) and builtin containers."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}  # the last rebuilds bytes in protocol 2

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays, lists, bytes and str")
        return super().find_class(module, name)


def _cifar10(path: Path, resolution: int) -> Data:
    def batch(name):
        f = path / name
        if not f.is_file():
            raise UserError(f"cifar10:{path}: missing {name} (expected the CIFAR-10 python version)")
        try:
            with open(f, "rb") as fh:
                d = _ArraysOnly(fh, encoding="bytes").load()
            x, y = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),) or not ((0 <= y) & (y < 10)).all():
                raise ValueError(f"data {x.shape} and labels {y.shape}, expected (N, 3072) and (N,) in 0-9")
        except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise UserError(f"cifar10:{path}: {name} is not a CIFAR-10 batch ({type(e).__name__}: {str(e)[:200]})") from None
        return x.reshape(-1, 3, 32, 32), y

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    xt, yt = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    xv, yv = batch("test_batch")
    return Data("cifar10", _tensors(xt, yt, resolution), _tensors(xv, yv, resolution), 10, resolution)


def _idx(path: Path, stem: str, ndim: int) -> np.ndarray:
    """One idx file (`stem-idx3-ubyte`, `.gz` or not; `stem.idx3-ubyte` too): the big-endian
    header (0, 0, dtype 0x08 = uint8, ndim, then ndim sizes) and the raw bytes. A header that
    disagrees with the file's size is refused, not trusted."""
    names = [f"{stem}{sep}idx{ndim}-ubyte{gz}" for gz in ("", ".gz") for sep in ("-", ".")]
    f = next((path / n for n in names if (path / n).is_file()), None)
    if f is None:
        raise UserError(f"{path}: missing {names[0]} (or {names[1]}): expected the four idx files of (Fashion-)MNIST")
    try:
        raw = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"{f}: cannot read it ({type(e).__name__}: {str(e)[:160]})") from None
    head = 4 + 4 * ndim
    if len(raw) < head or raw[:4] != bytes([0, 0, 8, ndim]):
        raise UserError(f"{f}: not an idx{ndim} file of bytes (magic {raw[:4].hex() or 'missing'}, expected 000008{ndim:02x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - head != int(np.prod(shape)):
        raise UserError(f"{f}: the header says {' x '.join(map(str, shape))} = {int(np.prod(shape))} bytes, the file holds {len(raw) - head}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape).copy()  # writable, as torch wants


def _mnist(kind: str, path: Path, resolution: int) -> Data:
    """(Fashion-)MNIST from its idx files, with the dataset's own train/test split."""
    def split(stem):
        x, y = _idx(path, f"{stem}-images", 3), _idx(path, f"{stem}-labels", 1)
        if len(x) != len(y) or not (y < 10).all():
            raise UserError(f"{path}: {stem} has {len(x)} images and {len(y)} labels (expected as many, in 0-9)")
        return x, y

    (xt, yt), (xv, yv) = split("train"), split("t10k")
    return Data(kind, _tensors(xt[:, None], yt, resolution), _tensors(xv[:, None], yv, resolution), 10, resolution)


def balanced_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of `n` samples, as even over the classes as `n` allows, drawn with `seed`: a small
    subset that keeps every class (a plain random subset can starve one)."""
    classes = np.unique(y)
    if not len(classes) <= n <= len(y):
        raise UserError(f"--train-limit {n}: must lie between {len(classes)} (one per class) and the {len(y)} training images")
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    share = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    while any(s > len(p) for s, p in zip(share, pools)):  # a class too small: its rest goes to the others
        spare = sum(max(0, s - len(p)) for s, p in zip(share, pools))
        share = [min(s, len(p)) for s, p in zip(share, pools)]
        room = [i for i, (s, p) in enumerate(zip(share, pools)) if s < len(p)]
        for k in range(spare):
            share[room[k % len(room)]] += 1
    return np.sort(np.concatenate([p[:s] for s, p in zip(share, pools)]))


def _imagefolder(path: Path, resolution: int) -> Data:
    from PIL import Image

    classes = sorted(p.name for p in (path / "train").iterdir() if p.is_dir()) if (path / "train").is_dir() else []
    if not classes:
        raise UserError(f"imagefolder:{path}: expected {path}/train/<class>/ and {path}/val/<class>/ folders")

    def split(name):
        xs, ys = [], []
        for k, c in enumerate(classes):
            for f in sorted((path / name / c).glob("*")):
                if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
                    img = Image.open(f).convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                    xs.append(np.asarray(img))
                    ys.append(k)
        if not xs:
            raise UserError(f"imagefolder:{path}: no images under {path / name}")
        return np.stack(xs), np.array(ys)

    (xt, yt), (xv, yv) = split("train"), split("val")
    return Data(f"imagefolder:{path.name}", _tensors(xt, yt, resolution), _tensors(xv, yv, resolution), len(classes), resolution)


def load_data(spec: str, resolution: int | None = None, train_limit: int | None = None) -> Data:
    """The dataset `spec` names, at `resolution` (default: its own). `train_limit` keeps that many
    training images, class-balanced, always drawn with seed 0: a search and the retrain of its
    net see the same images, whatever their own seeds. The name says so, for every figure."""
    data = _load(spec, resolution)
    if train_limit is None:
        return data
    x, y = data.train.tensors
    keep = torch.as_tensor(balanced_subset(y.numpy(), train_limit, seed=0))
    return replace(data, name=f"{data.name} (train-limit {train_limit})", train=TensorDataset(x[keep], y[keep]))


def _load(spec: str, resolution: int | None) -> Data:
    kind, _, arg = spec.partition(":")
    if kind == "fashion-mnist" and not arg:
        if not FASHION_MNIST.is_dir():
            raise UserError(f"--data fashion-mnist: {FASHION_MNIST} is missing; install it with: apt-get install dataset-fashion-mnist")
        return _mnist(kind, FASHION_MNIST, resolution or 28)
    if kind in ("mnist", "cifar10", "imagefolder") and not arg:
        raise UserError(f"--data {kind}:PATH needs a path")
    if kind in ("fashion-mnist", "mnist"):
        path = Path(arg).expanduser()
        if not path.is_dir():
            raise UserError(f"--data {spec}: no such folder (it holds the four idx files)")
        return _mnist(kind, path, resolution or 28)
    if kind == "digits" and not arg:
        return _digits(resolution or 32)
    if kind in ("cifar10", "imagefolder"):
        path = Path(arg).expanduser()
        if not path.is_dir():
            raise UserError(f"--data {spec}: no such folder")
        return _cifar10(path, resolution or 32) if kind == "cifar10" else _imagefolder(path, resolution or 224)
    raise UserError(f"unknown --data {spec!r} (digits, fashion-mnist, fashion-mnist:PATH, mnist:PATH, cifar10:PATH or imagefolder:PATH)")
