"""TensorRT engines. An engine is tied to the TensorRT version and the GPU that built it, so it
is always built where it will run: with the Python API on a host where `tensorrt` imports, or
with `trtexec --saveEngine` on the device itself (through the agents' transports). Never ship
an engine from elsewhere.

What can be checked without a GPU is plain functions in the agent (which runs trtexec on the
device): the trtexec argv, and parsers for trtexec's log and its `--exportTimes` JSON.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from nasctl.errors import UserError
from nasctl_agents.agent import parse_export_times, parse_trtexec_log, trtexec_argv  # device-side, one copy

__all__ = ["build_engine", "export_trt_local", "export_trt_on_device", "parse_export_times", "parse_trtexec_log", "trtexec_argv"]

NO_TRT = (
    "no TensorRT here: build the engine on the device that will run it "
    "(`nasctl export MODEL --format trt --device xavier`), or on a host with a GPU and `pip install tensorrt`"
)


def build_engine(onnx_path: str | Path, engine_path: str | Path, shape: list[int], *, fp16: bool = False,
                 int8: bool = False, workspace_mb: int = 1024) -> dict:
    """Build a serialized engine with the TensorRT Python API; returns version and GPU name."""
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(NO_TRT) from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", shape, shape, shape)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise UserError("TensorRT failed to build the engine (see its log above)")
    Path(engine_path).write_bytes(bytes(engine))
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"tensorrt_version": trt.__version__, "gpu": gpu, "fp16": fp16, "int8": int8, "workspace_mb": workspace_mb}


def export_trt_local(model, arch, shape, out: Path, ckpt: str, opset: int) -> dict:
    """ONNX first, then an engine built on this host's GPU; the sidecar records version and GPU."""
    from nasctl.export import _arch_info, sidecar_path
    from nasctl.export.onnx import export_onnx
    from nasctl.tables import OutputSet, to_json

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise UserError(NO_TRT) from None
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(model, shape, Path(tmp) / "model.onnx", opset)
        info = build_engine(onnx, Path(tmp) / "model.engine", list(shape))
        sidecar = {"format": "trt", **_arch_info(arch, shape), **info, "opset": opset, "source_checkpoint_sha256": ckpt}
        with OutputSet() as files:
            files.write(out, (Path(tmp) / "model.engine").read_bytes())
            files.write(sidecar_path(out), to_json(sidecar, indent=2).encode())
    return {"output": str(out), **sidecar}


def export_trt_on_device(model, arch, shape, out: Path, ckpt: str, opset: int, device, host: str | None = None,
                         trust_new_host_key: bool = False) -> dict:
    """ONNX here, the engine built on the device by its agent (`trtexec --saveEngine`), then the
    engine and trtexec's build log fetched back; precision and workspace come from the profile."""
    from nasctl.device.transports import open_transport
    from nasctl.export import _arch_info, sidecar_path
    from nasctl.export.onnx import export_onnx
    from nasctl.tables import OutputSet, to_json

    if device.runtime != "tensorrt":
        raise UserError(f"device {device.name!r} runs {device.runtime}, not TensorRT: no engine to build there")
    log_out = out.with_name(out.name + ".build.log")
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(model, shape, Path(tmp) / f"{arch.id}.onnx", opset)
        with open_transport(device, host, trust_new_host_key) as transport:
            (remote,) = transport.stage([onnx])
            info = transport.run_agent(["build-engine", "--onnx", remote, "--engine", remote + ".engine",
                                        "--shape", "x".join(map(str, shape)), "--precision", device.precision,
                                        "--workspace-mb", str(int(device.runtime_options.get("workspace_mb", 1024)))])
            transport.fetch(info["engine"], Path(tmp) / "model.engine")
            transport.fetch(info["log"], Path(tmp) / "build.log")
            for f in (remote, info["engine"], info["log"]):
                transport.unstage(f)
        sidecar = {"format": "trt", **_arch_info(arch, shape), "device": device.name, "built_on": info.get("host"),
                   "tensorrt_version": info.get("tensorrt_version"), "gpu": info.get("gpu"),
                   "compute_capability": info.get("compute_capability"), "precision": device.precision,
                   "build_log": str(log_out), "opset": opset, "source_checkpoint_sha256": ckpt}
        with OutputSet() as files:
            files.write(out, (Path(tmp) / "model.engine").read_bytes())
            files.write(log_out, (Path(tmp) / "build.log").read_bytes())
            files.write(sidecar_path(out), to_json(sidecar, indent=2).encode())
    return {"output": str(out), **sidecar}
