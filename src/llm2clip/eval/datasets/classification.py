"""ImageNet-style class folders for zero-shot classification and linear probes.

Layout: `root/<class_dir>/<image>.{jpg,jpeg,png,webp}` (any letter case, e.g. ImageNet's
`.JPEG`). Classes are the sub-folders in sorted order, label i = the i-th folder. Class
names come from, in this order of preference:
  1. `class_names`: a list, or a text file with one name per line in sorted-folder order;
  2. CLIP's 1000 ImageNet names (shipped) when the folders are the 1000 ImageNet wnids
     (n01440764, ...): CLIP's list is in sorted-wnid order, so folder i is name i;
  3. the folder names, with `_` read as a space.
Prompt templates default to CLIP's 80 ImageNet templates (shipped), `{}` = the class name.
"""
from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

from ...data.text_file import read_text
from ...errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
IMAGENET_CLASSES = 1000
_WNID = re.compile(r"n\d{8}")


@dataclass
class ClassificationBenchmark:
    name: str
    image_paths: list[Path]  # absolute
    labels: list[int]  # class index of each image
    class_names: list[str]
    templates: list[str]  # each with one `{}` for the class name
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def prompts(self, class_index: int) -> list[str]:
        """Every template filled with the class's name."""
        return [t.format(self.class_names[class_index]) for t in self.templates]

    def describe(self) -> str:
        text = (f"{self.name}: {len(self.image_paths)} images, {len(self.class_names)} classes, "
                f"{len(self.templates)} templates")
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return text


def load_imagenet_class_names() -> list[str]:
    """CLIP's 1000 ImageNet class names (the Prompt_Engineering_for_ImageNet notebook), wnid order."""
    return _asset_lines("imagenet_classes.txt")


def load_clip_templates() -> list[str]:
    """CLIP's 80 ImageNet prompt templates, e.g. `a bad photo of a {}.`"""
    return _asset_lines("clip_templates.txt")


def _asset_lines(filename: str) -> list[str]:
    text = resources.files("llm2clip.eval").joinpath("assets", filename).read_text(encoding="utf-8")
    return [line.strip() for line in text.split("\n") if line.strip()]


def imagenet_wnid_class_names(folder_names: Sequence[str]) -> list[str] | None:
    """CLIP's ImageNet names when `folder_names` are the 1000 sorted ImageNet wnids, else None."""
    if len(folder_names) != IMAGENET_CLASSES or not all(_WNID.fullmatch(n) for n in folder_names):
        return None
    if list(folder_names) != sorted(folder_names):
        return None  # the shipped names follow sorted-wnid order; any other order would mislabel
    return load_imagenet_class_names()


def read_class_folder(root, class_names: Sequence[str] | str | os.PathLike | None = None,
                      templates: Sequence[str] | str | os.PathLike | None = None, *,
                      skip_missing: bool = False, limit_per_class: int | None = None,
                      name: str | None = None) -> ClassificationBenchmark:
    """The images of every class folder under `root`, sorted, at most `limit_per_class` each.

    A class folder without images is a DataError naming it, unless `skip_missing` (then it
    is counted and kept as a class: zero-shot still chooses among all classes). So is an
    image entry that is not a readable file (a broken link).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of class folders")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders in it (expected root/<class>/<image>.jpg)")
    names = _class_names(root, folders, class_names)
    prompts = _templates(templates)
    skipped: dict[str, int] = {}
    paths, labels = [], []
    for label, folder in enumerate(folders):
        images = _class_images(root.resolve() / folder, skip_missing, skipped)[:limit_per_class]
        paths += images
        labels += [label] * len(images)
    if not paths:
        raise DataError(f"{root}: no images in any class folder (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return ClassificationBenchmark(name or root.name, paths, labels, names, prompts, skipped)


def _class_names(root: Path, folders: list[str], given) -> list[str]:
    if given is None:
        return imagenet_wnid_class_names(folders) or [f.replace("_", " ") for f in folders]
    names = _lines_of(given) if isinstance(given, (str, os.PathLike)) else list(given)
    if len(names) != len(folders):
        raise DataError(f"{root}: {len(folders)} class folders but {len(names)} class names"
                        + (f" in {given}" if isinstance(given, (str, os.PathLike)) else ""))
    return names


def _templates(given) -> list[str]:
    if given is None:
        return load_clip_templates()
    where = str(given) if isinstance(given, (str, os.PathLike)) else "templates"
    templates = _lines_of(given) if isinstance(given, (str, os.PathLike)) else list(given)
    if not templates:
        raise DataError(f"{where}: no prompt templates")
    for i, template in enumerate(templates):
        problem = template_problem(template)
        if problem:
            raise DataError(f"{where}: template {i + 1} {template!r} {problem}")
    return templates


def template_problem(template: str) -> str | None:
    """Why `template.format(class_name)` would fail or ignore the name (None: it is fine).
    A template holds exactly one `{}`; literal braces are written `{{` and `}}`."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as err:  # a lone { or }
        return f"is not a valid template ({err}); write a literal brace as {{{{ or }}}}"
    if not fields:
        return "has no {} for the class name"
    if len(fields) > 1 or fields[0][0] != "":
        found = ", ".join("{" + name + (f":{spec}" if spec else "") + "}" for name, spec, _ in fields)
        return f"must hold exactly one {{}} for the class name, found {found}; write a literal brace as {{{{ or }}}}"
    return None


def _lines_of(path) -> list[str]:
    """The non-blank lines of a text file, stripped."""
    return [line.strip() for line in read_text(path).split("\n") if line.strip()]


def _class_images(folder: Path, skip_missing: bool, skipped: dict[str, int]) -> list[Path]:
    entries = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    broken = [p for p in entries if not p.is_file()]
    if broken and not skip_missing:
        raise DataError(f"{folder}: {len(broken)} image entries are not readable files, e.g. {broken[0]} "
                        "(skip_missing=True drops them, counted)")
    if broken:
        skipped["missing_image"] = skipped.get("missing_image", 0) + len(broken)
    images = [p for p in entries if p.is_file()]
    if not images:
        if not skip_missing:
            raise DataError(f"{folder}: class folder without images (skip_missing=True keeps the class, counted)")
        skipped["empty_class"] = skipped.get("empty_class", 0) + 1
    return images
