"""Exporters: what ships. Each export writes the artifact plus a JSON sidecar (arch, input
shape, runtime version, parity figure, hash of the source checkpoint)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import torch

from nasctl.errors import NasctlError, UserError
from nasctl.models import build, input_shape
from nasctl.space.archfile import read_arch_ref
from nasctl.tables import OutputSet, to_json

FORMATS = ("onnx", "tflite", "trt")
SUFFIXES = {"onnx": (".onnx",), "tflite": (".tflite",), "trt": (".engine", ".plan", ".trt")}  # so -o never names an input
PARITY = {"onnx": 1e-4, "tflite": 1e-3}


def load_trained(model_dir: str | Path):
    """(arch, model in eval mode, sha256 of model.pt) from a `nasctl retrain` folder."""
    f = Path(model_dir) / "model.pt"
    if not f.is_file():
        raise UserError(f"{model_dir}: no model.pt (the output folder of `nasctl retrain`)")
    try:
        blob = torch.load(f, map_location="cpu", weights_only=True)
        doc = json.loads(blob["arch"])
        text, space, params = str(doc["arch"]), str(doc["space"]), dict(doc["params"])
    except Exception as e:  # truncated, foreign or hand-edited: all the same to the user
        raise UserError(f"{f}: not a model of nasctl retrain ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    arch = read_arch_ref(text, space, **params)
    model = build(arch)
    try:
        model.load_state_dict(blob["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{f}: its weights do not fit {arch.id} ({str(e).splitlines()[0][:200]})") from None
    return arch, model.eval(), hashlib.sha256(f.read_bytes()).hexdigest()


def export_model(model_dir: str | Path, fmt: str, out: str | Path, *, opset: int = 17, batch: int = 1,
                 dynamic_batch: bool = False, device: str | None = None, host: str | None = None,
                 trust_new_host_key: bool = False) -> dict:
    """Export, check parity against torch, and write the artifact and its sidecar atomically.

    A TensorRT engine is built on `device` (a profile name) when one is given, else on this host."""
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r} (one of: {', '.join(FORMATS)})")
    if device is not None and fmt != "trt":
        raise UserError("--device is for --format trt (ONNX and TFLite files are built here and run anywhere)")
    if host is not None and device is None:
        raise UserError("--host names the board of --device (with --format trt)")
    dev = None
    if device is not None:
        from nasctl.device import load_device

        dev = load_device(device)
    arch, model, ckpt = load_trained(model_dir)
    out = Path(out)
    shape = input_shape(arch.space, batch)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        art = Path(tmp) / out.name
        if fmt == "onnx":
            import onnxruntime

            from nasctl.export.onnx import export_onnx, onnx_parity

            export_onnx(model, shape, art, opset, dynamic_batch)
            parity = onnx_parity(model, art, shape)
            runtime = {"opset": opset, "onnxruntime": onnxruntime.__version__, "dynamic_batch": dynamic_batch}
        elif fmt == "tflite":
            from nasctl.export.tflite import export_tflite, tflite_parity

            export_tflite(model, shape, art)
            parity = tflite_parity(model, art, shape)
            from importlib.metadata import version

            runtime = {"converter": f"litert-torch {version('litert-torch')}", "interpreter": f"ai-edge-litert {version('ai-edge-litert')}"}
        elif dev is not None:
            from nasctl.export.trt import export_trt_on_device

            return export_trt_on_device(model, arch, shape, out, ckpt, opset, dev, host, trust_new_host_key)
        else:
            from nasctl.export.trt import export_trt_local

            return export_trt_local(model, arch, shape, out, ckpt, opset)
        if not parity <= PARITY[fmt]:
            raise NasctlError(f"{fmt} parity check failed: max abs diff {parity:.3g} > {PARITY[fmt]:g}")
        sidecar = {"format": fmt, **_arch_info(arch, shape), **runtime,
                   "parity_max_abs_diff": parity, "parity_tolerance": PARITY[fmt], "source_checkpoint_sha256": ckpt}
        with OutputSet() as files:
            files.write(out, art.read_bytes())
            files.write(sidecar_path(out), to_json(sidecar, indent=2).encode())
    return {"output": str(out), **sidecar}


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _arch_info(arch, shape) -> dict:
    return {"arch": arch.string, "arch_id": arch.id, "space": arch.space.name,
            "params": arch.space.params.__dict__, "input_shape": list(shape)}
