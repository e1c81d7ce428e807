"""TFLite export through litert-torch (no TensorFlow), checked in the LiteRT interpreter.

litert-torch is large (~2 GB with its dependencies), so it is the optional `[tflite]` extra.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch
from torch import nn

from nasctl.errors import UserError
from nasctl.export.onnx import max_abs_diff

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


def tflite_parity(model: nn.Module, path: str | Path, input_shape) -> float:
    """Max abs difference between torch and the LiteRT interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserError(EXTRA) from None
    with _stdout_to_stderr():
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def infer(x):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])

    return max_abs_diff(model, infer, input_shape)
