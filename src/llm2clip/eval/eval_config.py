"""The evaluation recipe: what `llm2clip eval --config` reads (configs/eval/*.yaml).

    models:                 # one report column each
      - {name: baseline, kind: hf_clip, path: openai/clip-vit-large-patch14-336}
      - {name: llm2clip, kind: llm2clip, path: runs/stage2/final}
    benchmarks:
      - {name: flickr30k, kind: karpathy, path: data/flickr30k_test.json, image_root: data/flickr30k}
      - {name: urban1k, kind: urban1k, path: data/Urban1k}
      - {name: xm3600, kind: xm3600, path: data/xm3600/captions.jsonl, languages: [en, de, zh]}
      - {name: imagenet, kind: zeroshot, path: data/imagenet/val}
      - {name: cifar10-probe, kind: linear_probe, train: data/cifar10/train, path: data/cifar10/test}  # solver: sgd
      - {name: coco-cra, kind: cra, path: data/coco_test.json}
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..choices import DEVICES
from ..config import check_config, setting
from .datasets import RETRIEVAL_READERS
from .linear_probe import SOLVERS

MODEL_KINDS = ("llm2clip", "hf_clip", "dual_encoder")
RETRIEVAL_KINDS = tuple(RETRIEVAL_READERS)  # the readers' registry is the one list
BENCHMARK_KINDS = RETRIEVAL_KINDS + ("zeroshot", "linear_probe", "cra")


@dataclass
class ModelSpec:
    name: str  # the model's column in the report
    path: str  # an LLM2CLIP folder, an HF CLIP/SigLIP id or folder, or a DualEncoder folder
    kind: str = setting("llm2clip", choices=MODEL_KINDS)


@dataclass
class BenchmarkSpec:
    name: str
    kind: str = setting(choices=BENCHMARK_KINDS)
    path: str  # the benchmark's caption file or folder (the test folder for zeroshot/probe)
    image_root: str | None = None  # default: next to the caption file, as each reader documents
    fields: list[str] = field(default_factory=list)  # caption fields for jsonl/csv/cra
    image_field: str = "image"  # jsonl/csv
    languages: list[str] = field(default_factory=list)  # xm3600: default all in the file
    train: str | None = None  # linear_probe: the training class folder
    class_names: str | None = None  # zeroshot: one name per line, in class-folder order
    templates: str | None = None  # zeroshot: one prompt per line with {} (default: CLIP's 80)
    limit: int | None = setting(None, at_least=1, null="all items")  # first N items (quick looks; reported)
    # linear_probe: "sgd" (§4.2.3's SGD: batch 1024, lr 0.1, momentum 0.9, 50 epochs, mini-batched)
    # or "lbfgs" (CLIP's full-batch L-BFGS, for features that fit in memory twice)
    solver: str = setting("sgd", choices=SOLVERS)
    # linear_probe penalty; None = 0 for sgd (§4.2.3), chosen on a held-out split for lbfgs
    l2: float | None = setting(None, at_least=0, null="0 for sgd, chosen on a held-out split for lbfgs")


@dataclass
class EvalConfig:
    models: list[ModelSpec] = field(default_factory=list)
    benchmarks: list[BenchmarkSpec] = field(default_factory=list)
    output_dir: str = "runs/eval"
    batch_size: int = setting(64, at_least=1)
    skip_missing: bool = False  # drop (and count) images a benchmark names but that are absent
    cache: bool = True  # reuse a model's embeddings of a benchmark from output_dir/cache
    device: str = setting("auto", choices=DEVICES)  # auto: the GPU if there is one

    def validate(self) -> None:
        check_config(self)
        if not self.models:
            raise ValueError("eval config: `models` is empty; list at least one {name, kind, path}")
        if not self.benchmarks:
            raise ValueError("eval config: `benchmarks` is empty; list at least one {name, kind, path}")
        for where, names in (("models", [m.name for m in self.models]),
                             ("benchmarks", [b.name for b in self.benchmarks])):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"eval config: {where} names must be unique, repeated: {repeated}")
        for i, b in enumerate(self.benchmarks):
            if b.kind == "linear_probe" and not b.train:
                raise ValueError(f"eval config: benchmarks[{i}] ({b.name}): linear_probe needs `train` "
                                 "(a class folder of training images)")
