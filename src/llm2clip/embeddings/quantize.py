"""Storage dtypes of the embedding store: float32 rows in, stored tensors out, and back.

fp16 (default) and bf16 halve the size of fp32; int8 quarters it with one float32 scale
per row (symmetric: q = round(x / s), s = max|x| / 127), so every value comes back within
`int8_error_bound(row) = max|row| / 254` of the original. Embeddings are L2-normalised,
so fp16 never overflows and its rounding error is below 2**-11 (~5e-4) per value.
"""
from __future__ import annotations

import numpy as np
import torch

DTYPES = ("fp16", "bf16", "fp32", "int8")
# safetensors dtype name of the `embeddings` tensor for each storage dtype
SAFETENSORS_DTYPE = {"fp16": "F16", "bf16": "BF16", "fp32": "F32", "int8": "I8"}
INT8_MAX = 127


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"embedding dtype must be one of {DTYPES}, got {dtype!r}")
    return dtype


def quantize(rows: torch.Tensor, dtype: str) -> dict[str, torch.Tensor]:
    """[n, D] float32 -> the tensors stored for them: `embeddings` (and `scale` for int8)."""
    rows = rows.detach().to(torch.float32).cpu().contiguous()
    if check_dtype(dtype) == "fp32":
        return {"embeddings": rows}
    if dtype == "fp16":
        return {"embeddings": rows.to(torch.float16)}
    if dtype == "bf16":
        return {"embeddings": rows.to(torch.bfloat16)}
    # a zero row would divide by zero; its scale is irrelevant, so any positive value works
    scale = (rows.abs().amax(dim=1) / INT8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(rows / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return {"embeddings": q, "scale": scale}


def dequantize(stored: np.ndarray, dtype: str, scale: np.ndarray | None = None) -> np.ndarray:
    """Stored rows (as numpy reads them from the file) -> float32 rows.

    numpy has no bfloat16: bf16 rows arrive as their raw uint16 bit patterns, which are
    the upper halves of the float32 values.
    """
    if dtype == "bf16":
        return (np.asarray(stored, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    if dtype == "int8":
        return np.asarray(stored, dtype=np.float32) * np.asarray(scale, dtype=np.float32)[:, None]
    return np.asarray(stored, dtype=np.float32)


def int8_error_bound(rows: np.ndarray) -> np.ndarray:
    """Per-row bound on |x - dequantize(quantize(x))| for int8 (half a quantisation step)."""
    return np.abs(rows).max(axis=1) / (2 * INT8_MAX)
