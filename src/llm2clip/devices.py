"""Which device a run uses: `auto` (CUDA when a GPU is visible, else the CPU), `cpu`, or
`cuda` - which must then exist: a run asked to use a GPU never falls back to the CPU.
(`embed --device` also takes `cuda:N`, one process's GPU.)"""
from __future__ import annotations

from .choices import DEVICES
from .config import ConfigError


def resolve_device(device: str, key: str = "device") -> str:
    """"cpu" or "cuda" for the setting `key` = `device`; a ConfigError naming the key if impossible."""
    import torch

    if device not in DEVICES:
        raise ConfigError(f"{key} {device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} is cuda, but torch sees no CUDA device on this machine; set {key} to auto or cpu")
    return device


def check_device_name(device: str, key: str = "--device") -> str:
    """`device` if it is cpu, cuda or cuda:N and exists here; else a ConfigError naming `key`."""
    import torch

    name, _, index = device.partition(":")
    if name not in ("cpu", "cuda") or (index and (name != "cuda" or not index.isdigit())):
        raise ConfigError(f"{key} {device!r} is not cpu, cuda or cuda:N")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} is {device}, but torch sees no CUDA device on this machine")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"{key} is {device}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True on CPUs that multiply bf16 in hardware (Intel AMX or AVX512-BF16, read from
    /proc/cpuinfo): there bf16 autocast embeds ~1.8x faster than fp32 (demo/run.py). Elsewhere
    (AVX2 laptops, Apple, non-Linux) bf16 is emulated and slower, so callers keep fp32."""
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))
