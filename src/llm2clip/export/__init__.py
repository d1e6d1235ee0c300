"""Exporting a trained model for serving (ONNX, behind the `onnx` extra)."""
from .onnx_export import ExportError, export_onnx

__all__ = ["export_onnx", "ExportError"]
