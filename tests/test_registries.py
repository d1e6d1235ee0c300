"""Each choice list is defined once, by the registry of the code behind it, and the config,
the command line and the code all read that registry; a new vision tower, loss or pooling
is one class or function plus one registry entry (docs/design.md "How to extend")."""
import argparse
import dataclasses
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from llm2clip.adaptor import ADAPTORS
from llm2clip.cli import build_parser
from llm2clip.config import CHECK
from llm2clip.eval.datasets import RETRIEVAL_READERS
from llm2clip.eval.eval_config import RETRIEVAL_KINDS
from llm2clip.losses import LOSSES, ImageTextLoss, clip_loss
from llm2clip.model import LLM2CLIP, LLM2CLIPConfig
from llm2clip.text.pooling import POOLINGS, pool
from llm2clip.text.settings import EncoderSettings
from llm2clip.train.stage1_config import Stage1Config
from llm2clip.train.stage2_config import Stage2Config
from llm2clip.train.stage2_objective import Stage2Objective
from llm2clip.vision import TOWERS, VisionTower, load_vision_tower
from llm2clip.vision.towers import read_tower_config, read_tower_weights, write_tower_folder


def choices_of(config_class, key: str):
    """The choices a recipe key (e.g. "train.loss") is validated against."""
    *path, name = key.split(".")
    for part in path:
        config_class = typing.get_type_hints(config_class)[part]
    return {f.name: f for f in dataclasses.fields(config_class)}[name].metadata[CHECK].choices


def cli_choices(*command: str, option: str):
    parser = build_parser()
    for name in command:
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subcommands.choices[name]
    return next(a for a in parser._actions if option in a.option_strings).choices


def test_each_choice_list_is_its_registrys_keys():
    assert choices_of(Stage1Config, "model.pooling") == tuple(POOLINGS)
    assert cli_choices("eval", "cra", option="--pooling") == tuple(POOLINGS)
    assert choices_of(Stage2Config, "train.loss") == tuple(LOSSES)
    assert RETRIEVAL_KINDS == tuple(RETRIEVAL_READERS)
    with pytest.raises(ValueError, match="pooling must be one of"):
        EncoderSettings(base_model="x", pooling="max")


def test_adaptor_kinds_are_validated_against_the_registry():
    cfg = Stage2Config()
    for kind in ADAPTORS:
        cfg.model.adaptor = {"kind": kind}
        cfg._check_adaptor()
    cfg.model.adaptor = {"kind": "resnet"}
    with pytest.raises(ValueError, match="'resnet' is not one of mlp, transformer"):
        cfg._check_adaptor()


def test_a_pooling_is_one_function_and_one_entry(monkeypatch):
    hidden = torch.randn(2, 5, 3)
    pool_mask = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 1, 1, 1]])
    monkeypatch.setitem(POOLINGS, "max", lambda h, pool_mask, attention_mask: h.masked_fill(
        pool_mask[..., None] == 0, float("-inf")).amax(1))
    torch.testing.assert_close(pool(hidden, pool_mask, torch.ones(2, 5), "max"),
                               torch.stack([hidden[0, 1:3].amax(0), hidden[1, 1:].amax(0)]))
    EncoderSettings(base_model="x", pooling="max")  # the settings accept it too


class ToyTower(VisionTower):
    """The smallest complete tower: mean colour -> linear. Names: "toy:<width>", or a saved folder."""

    kind = "toy"

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(3, width)

    @property
    def width(self) -> int:
        return self.linear.out_features

    def forward(self, pixel_values):
        return self.linear(pixel_values.mean((2, 3)))

    def preprocess(self, images):
        pixels = [np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float32) / 255 for image in images]
        return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)

    def layer_groups(self):
        return [list(self.parameters())]

    def gradient_checkpointing_enable(self):
        pass

    def save_pretrained(self, directory):
        write_tower_folder(directory, {"kind": self.kind, "width": self.width}, self.linear.state_dict())

    @classmethod
    def from_pretrained(cls, source):
        if str(source).startswith("toy:"):
            return cls(int(str(source)[4:]))
        tower = cls(read_tower_config(source)["width"])
        tower.linear.load_state_dict(read_tower_weights(source))
        return tower


def test_a_vision_tower_is_one_class_and_one_entry(monkeypatch, tmp_path):
    monkeypatch.setitem(TOWERS, ToyTower.kind, ToyTower)
    tower = load_vision_tower("toy:6")
    assert isinstance(tower, ToyTower) and tower.width == 6
    tower.save_pretrained(tmp_path / "tower")
    again = load_vision_tower(tmp_path / "tower")
    assert isinstance(again, ToyTower) and torch.equal(again.linear.weight, tower.linear.weight)
    model = LLM2CLIP(LLM2CLIPConfig(vision="toy:6", text_dim=8, embed_dim=4))  # what `model.vision: toy:6` builds
    assert model.encode_image([Image.new("RGB", (9, 7), (200, 10, 10))]).shape == (1, 4)
    monkeypatch.delitem(TOWERS, ToyTower.kind)
    with pytest.raises(Exception):  # without the entry the name means nothing
        load_vision_tower("toy:6")


def test_a_loss_is_one_function_and_one_entry(monkeypatch):
    def doubled_clip(image, text, logit_scale, logit_bias=None):
        return 2 * clip_loss(image, text, logit_scale)

    monkeypatch.setitem(LOSSES, "doubled_clip", ImageTextLoss(doubled_clip, learns_bias=False))
    monkeypatch.setitem(TOWERS, ToyTower.kind, ToyTower)
    model = LLM2CLIP(LLM2CLIPConfig(vision="toy:6", text_dim=8, embed_dim=4))
    image, text = F.normalize(torch.randn(2, 5, 4), dim=-1)
    doubled = Stage2Objective(model, "doubled_clip").term_loss("llm", image, text)
    torch.testing.assert_close(doubled, 2 * Stage2Objective(model, "clip").term_loss("llm", image, text))
