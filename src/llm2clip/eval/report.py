"""The outputs of an evaluation run: results.json, report.md and PNG plots.

Input is the runner's results dict:

    {"models": ["baseline", "llm2clip"],
     "benchmarks": {"flickr30k": {"kind": "retrieval", "language": "en",
                                  "results": {"baseline": {"i2t_R@1": 85.2, ...}, ...},
                                  "notes": {"baseline": "312 of 1000 captions truncated"}}}}

report.md has one table per benchmark kind in the style of the paper's Table 2: a row per
benchmark, a column per model x headline metric, one decimal. A model without a result
shows "–" (it is never an error). Plots are drawn with matplotlib's object API on the Agg
canvas (no pyplot state, no display needed) and skipped when they would be empty.
"""
from __future__ import annotations

import io
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

from ..atomic_file import atomic_write_bytes, atomic_write_text

MISSING = "–"
KIND_TITLES = {"retrieval": "Zero-shot retrieval", "zeroshot": "Zero-shot classification",
               "linear_probe": "Linear probe", "cra": "Caption retrieval accuracy (CRA)"}
# (metric key, column label): the paper's headline numbers, then the secondary ones.
HEADLINE = {"retrieval": [("i2t_R@1", "I2T R@1"), ("t2i_R@1", "T2I R@1")],
            "zeroshot": [("top1", "top-1")], "linear_probe": [("top1", "top-1")], "cra": [("top1", "top-1")]}
SECONDARY = {"retrieval": [("i2t_R@5", "I2T R@5"), ("i2t_R@10", "I2T R@10"),
                           ("t2i_R@5", "T2I R@5"), ("t2i_R@10", "T2I R@10")]}
# R@1 with ties broken at random (eval/retrieval.py): next to the headline R@1, whose tie
# rule counts ties against the query, so a margin is never an artefact of that rule
RANDOM_TIES = {"retrieval": [("i2t_R@1_random_ties", "I2T R@1"), ("t2i_R@1_random_ties", "T2I R@1")]}
CLASSIFICATION_KINDS = ("zeroshot", "linear_probe")


def write_report(results: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write results.json, report.md and whichever plots have data; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "markdown": out / "report.md"}
    atomic_write_text(files["json"], json.dumps(results, indent=2, default=_jsonable) + "\n")
    atomic_write_text(files["markdown"], render_markdown(results))
    for name, draw in (("retrieval", plot_retrieval), ("classification", plot_classification),
                       ("multilingual_radar", plot_multilingual_radar)):
        figure = draw(results)
        if figure is not None:
            files[name] = out / f"{name}.png"
            _save_png(figure, files[name])
    return files


# ---------------------------------------------------------------- markdown


def render_markdown(results: dict) -> str:
    """The whole report.md: a section per benchmark kind, footnotes for the notes."""
    models = _models(results)
    footnotes: list[str] = []
    parts = ["# Evaluation report", "", f"Models: {', '.join(models)}. All numbers in percent.", ""]
    for kind, names in _by_kind(results).items():
        title = KIND_TITLES.get(kind, kind)
        metrics = HEADLINE.get(kind) or _numeric_metrics(results, names)
        parts += [f"## {title}", "", *_table(results, names, models, metrics, footnotes), ""]
        if kind in SECONDARY:
            parts += [f"### {title}: R@5 and R@10", "",
                      *_table(results, names, models, SECONDARY[kind], None), ""]
        if kind in RANDOM_TIES and _has_values(results, names, [key for key, _ in RANDOM_TIES[kind]]):
            parts += [f"### {title}: R@1 with ties broken at random", "",
                      "Texts that a text tower cuts to the same tokens score the same; above, such ties",
                      "count against the query, here each tied candidate is first with equal chance.", "",
                      *_table(results, names, models, RANDOM_TIES[kind], None), ""]
    if footnotes:
        parts += ["## Notes", "", *footnotes, ""]
    return "\n".join(parts)


def _table(results: dict, names: list[str], models: list[str], metrics: list[tuple[str, str]],
           footnotes: list[str] | None) -> list[str]:
    """Markdown rows: Benchmark | [Language] | model metric ... ; notes become footnote
    markers on the model's first cell (only when `footnotes` collects them)."""
    show_language = any(_bench(results, n).get("language") for n in names)
    header = ["Benchmark"] + (["Language"] if show_language else [])
    header += [f"{model} {label}" for model in models for _, label in metrics]
    lines = [_row(header), "|" + "---|" * len(header)]
    for name in names:
        bench = _bench(results, name)
        row = [name] + ([bench.get("language") or MISSING] if show_language else [])
        for model in models:
            cells = [format_value(_metric(bench, model, key)) for key, _ in metrics]
            note = (bench.get("notes") or {}).get(model)
            if note and footnotes is not None:
                footnotes.append(f"[^{len(footnotes) + 1}]: {model} on {name}: {' '.join(str(note).split())}")
                cells[0] += f"[^{len(footnotes)}]"
            row += cells
        lines.append(_row(row))
    return lines


def _row(cells: list[str]) -> str:
    """A Markdown table row; a "|" inside a cell would split it, so it is escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def format_value(value: Any) -> str:
    """One decimal; "–" for a missing value."""
    if value is None:
        return MISSING
    try:
        return f"{float(value):.1f}"
    except (TypeError, ValueError):
        return str(value)


# ---------------------------------------------------------------- plots


def plot_retrieval(results: dict):
    """Grouped bars: a group per retrieval benchmark, a bar per model; I2T and T2I R@1."""
    names = _by_kind(results).get("retrieval", [])
    if not _has_values(results, names, ["i2t_R@1", "t2i_R@1"]):
        return None
    figure, axes = _figure(1, 2, width=min(20.0, max(8.0, 1.6 * len(names))))
    for ax, (key, label) in zip(axes, HEADLINE["retrieval"]):
        _grouped_bars(ax, results, names, key, names)
        ax.set_title(label)
    return figure


def plot_classification(results: dict):
    """Grouped bars of top-1 for zero-shot classification and linear-probe benchmarks."""
    kinds = _by_kind(results)
    names = [n for kind in CLASSIFICATION_KINDS for n in kinds.get(kind, [])]
    if not _has_values(results, names, ["top1"]):
        return None
    figure, axes = _figure(1, 1, width=min(20.0, max(6.0, 1.5 * len(names))))
    labels = [f"{n}\n({KIND_TITLES[_bench(results, n)['kind']].lower()})" for n in names]
    _grouped_bars(axes[0], results, names, "top1", labels)
    axes[0].set_title("Top-1 accuracy")
    return figure


def plot_multilingual_radar(results: dict):
    """One spider chart per metric, an axis per language, a polygon per model (paper Fig. 4).
    Drawn only when the benchmarks carrying a language cover two or more languages."""
    names = [n for n in results.get("benchmarks", {}) if _bench(results, n).get("language")]
    if len({_bench(results, n)["language"] for n in names}) < 2:
        return None
    panels = []  # (title, benchmark names, metric key)
    for kind, kind_names in _by_kind(results).items():
        tagged = [n for n in kind_names if n in names]
        if len({_bench(results, n)["language"] for n in tagged}) < 2:
            continue  # a spider chart over one language says nothing
        for key, label in HEADLINE.get(kind, [])[:2]:
            if _has_values(results, tagged, [key]):
                panels.append((f"{KIND_TITLES.get(kind, kind)}: {label}", tagged, key))
    if not panels:
        return None
    figure, axes = _figure(1, len(panels), width=5.5 * len(panels), height=5.5, polar=True)
    for ax, (title, tagged, key) in zip(axes, panels):
        _radar(ax, results, tagged, key)
        ax.set_title(title, pad=20)
    axes[-1].legend(loc="upper right", bbox_to_anchor=(1.35, 1.1))
    return figure


def _grouped_bars(ax, results: dict, names: list[str], key: str, labels: list[str]) -> None:
    models = _models(results)
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        values = [_metric(_bench(results, n), model, key) for n in names]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(names))]
        present = [(x, float(v)) for x, v in zip(xs, values) if v is not None]  # missing: no bar
        if present:
            bars = ax.bar([x for x, _ in present], [v for _, v in present], width, label=model)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
    crowded = len(names) > 4  # slanted labels so long benchmark names do not overlap
    ax.set_xticks(range(len(names)), labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)


def _radar(ax, results: dict, names: list[str], key: str) -> None:
    languages = [_bench(results, n)["language"] for n in names]
    # One axis per language; a language measured by several benchmarks gets one per benchmark.
    labels = [lang if languages.count(lang) == 1 else f"{lang}: {n}" for n, lang in zip(names, languages)]
    angles = [2 * math.pi * i / len(names) for i in range(len(names))]
    for model in _models(results):
        values = [_metric(_bench(results, n), model, key) for n in names]
        values = [math.nan if v is None else float(v) for v in values]  # a gap, not a fake zero
        ax.plot(angles + angles[:1], values + values[:1], marker="o", label=model)
        if not any(math.isnan(v) for v in values):
            ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles, labels)
    ax.set_ylim(0, 100)


def _figure(rows: int, cols: int, width: float, height: float = 4.5, polar: bool = False):
    from matplotlib.figure import Figure  # imported late: only report writing needs matplotlib

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = [figure.add_subplot(rows, cols, i + 1, polar=polar) for i in range(rows * cols)]
    return figure, axes


def _save_png(figure, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------- reading the results dict


def _models(results: dict) -> list[str]:
    """The declared models, then any model that has results but was not declared."""
    models = list(results.get("models", []))
    for bench in results.get("benchmarks", {}).values():
        models += [m for m in (bench.get("results") or {}) if m not in models]
    return models


def _by_kind(results: dict) -> dict[str, list[str]]:
    """Benchmark names grouped by kind: the known kinds in a fixed order, then the others."""
    grouped: dict[str, list[str]] = {}
    for name, bench in results.get("benchmarks", {}).items():
        grouped.setdefault(bench.get("kind", "other"), []).append(name)
    order = list(KIND_TITLES) + sorted(k for k in grouped if k not in KIND_TITLES)
    return {kind: grouped[kind] for kind in order if kind in grouped}


def _bench(results: dict, name: str) -> dict:
    return results["benchmarks"][name]


def _metric(bench: dict, model: str, key: str):
    value = ((bench.get("results") or {}).get(model) or {}).get(key)
    return float(value) if _is_number(value) else None


def _is_number(value) -> bool:
    """Python and numpy numbers; not bools (a flag is not a metric)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _has_values(results: dict, names: list[str], keys: list[str]) -> bool:
    return any(_metric(_bench(results, n), m, k) is not None
               for n in names for m in _models(results) for k in keys)


def _numeric_metrics(results: dict, names: list[str]) -> list[tuple[str, str]]:
    """Columns for a kind without a headline list: every numeric metric except counts."""
    keys: list[str] = []
    for name in names:
        for metrics in (_bench(results, name).get("results") or {}).values():
            keys += [k for k, v in (metrics or {}).items()
                     if k not in keys and k not in ("n", "n_images", "n_texts") and _is_number(v)]
    return [(k, k) for k in keys]


def _jsonable(value: Any):
    """json.dumps fallback for tensors, numpy values and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to results.json")
