"""Exporters: the artifacts that ship (ONNX now; TFLite and TensorRT with the export issue)."""
