"""TFLite export through litert-torch (no TensorFlow), checked in the LiteRT interpreter.

litert-torch is large (~2 GB with its dependencies), so it is the optional `[tflite]` extra.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nasctl.errors import UserError

EXTRA = "tflite export needs the [tflite] extra: pip install -e '.[tflite]' (litert-torch, ai-edge-litert)"


@contextlib.contextmanager
def _stdout_to_stderr():
    """The converter prints progress on fd 1, natively too; stdout belongs to --json."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def export_tflite(model: nn.Module, input_shape, path: str | Path) -> Path:
    try:
        import litert_torch
    except ImportError:
        raise UserError(EXTRA) from None
    model.eval()
    with _stdout_to_stderr():
        edge = litert_torch.convert(model, (torch.randn(*input_shape),))
        edge.export(str(path))
    return Path(path)


def tflite_parity(model: nn.Module, path: str | Path, input_shape, trials: int = 4, seed: int = 0) -> float:
    """Max abs difference between torch and the LiteRT interpreter on random inputs."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserError(EXTRA) from None
    with _stdout_to_stderr():
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    model.eval()
    with torch.no_grad():
        for _ in range(trials):
            x = torch.randn(*input_shape, generator=g)
            interp.set_tensor(inp["index"], x.numpy())
            interp.invoke()
            worst = max(worst, float(np.abs(model(x).numpy() - interp.get_tensor(out["index"])).max()))
    return worst
