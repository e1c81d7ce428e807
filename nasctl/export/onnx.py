"""ONNX export with the legacy TorchScript exporter: ~0.3 s per net against ~3 s for dynamo.

Every file is checked by `onnx.checker`, so a model the exporter wrote but no runtime accepts
fails here, named as an export error, rather than as a puzzling runtime error on the device.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn


def export_onnx(model: nn.Module, input_shape, path: str | Path, opset: int = 17, dynamic_batch: bool = False) -> Path:
    model.eval()
    x = torch.randn(*input_shape)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["logits"], dynamic_axes=axes,
        )
    onnx.checker.check_model(str(path), full_check=True)
    return Path(path)


def max_abs_diff(model: nn.Module, infer, input_shape, trials: int = 4, seed: int = 0) -> float:
    """Worst |torch - runtime| over the logits of `trials` seeded random inputs.

    `infer` maps a float32 numpy input to the runtime's logits; every exporter checks parity
    through this one function, so the figures in the sidecars are comparable.
    """
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    model.eval()
    with torch.no_grad():
        for _ in range(trials):
            x = torch.randn(*input_shape, generator=g)
            worst = max(worst, float(np.abs(model(x).numpy() - infer(x.numpy())).max()))
    return worst


def onnx_parity(model: nn.Module, path: str | Path, input_shape) -> float:
    """Max abs difference between torch and onnxruntime (CPU)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return max_abs_diff(model, lambda x: sess.run(None, {"input": x})[0], input_shape)
