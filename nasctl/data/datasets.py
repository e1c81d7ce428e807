"""Datasets as tensors in memory, named by a spec string; nothing is ever downloaded.

- `digits`: scikit-learn's 1,797 handwritten digits (8x8, 10 classes), shipped inside the
  package, upsampled to 32x32 RGB so the spaces' CIFAR macros apply. The built-in CPU default.
- `cifar10:PATH`: the CIFAR-10 "python version" folder (data_batch_1..5, test_batch).
- `imagefolder:PATH`: PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg (e.g. ImageNet-100),
  resized to --resolution.

Every dataset gives a train and a val split; a search splits train again for its bi-level steps.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from nasctl.errors import UserError

MEAN, STD = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)


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


def load_data(spec: str, resolution: int | None = None) -> Data:
    kind, _, arg = spec.partition(":")
    if kind == "digits" and not arg:
        return _digits(resolution or 32)
    if kind in ("cifar10", "imagefolder"):
        if not arg:
            raise UserError(f"--data {kind}:PATH needs a path")
        path = Path(arg).expanduser()
        if not path.is_dir():
            raise UserError(f"--data {spec}: no such folder")
        return _cifar10(path, resolution or 32) if kind == "cifar10" else _imagefolder(path, resolution or 224)
    raise UserError(f"unknown --data {spec!r} (digits, cifar10:PATH or imagefolder:PATH)")
