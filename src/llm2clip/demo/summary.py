"""The demo's printed summary: the tables a reader looks at first, from summary.json."""
from __future__ import annotations

from .emoji_pool import LANGUAGES
from .evaluation import MODELS

MODEL_LABELS = {"baseline": "baseline CLIP (EfficientNet + MiniLM, 77 tokens)",
                "llm2clip": "LLM2CLIP (stage-1 SmolLM2)",
                "llm2clip_raw_llm": "LLM2CLIP on the raw LLM (no stage 1)"}
RETRIEVAL = ("emoji-short", "emoji-long", "emoji-neardup")


def render_summary(summary: dict) -> str:
    lines = ["", "LLM2CLIP demo" + (" (--fast)" if summary["fast"] else "")]
    lines += _stage1(summary["stage1"])
    for split, results in (("test", summary["eval"]["results"]), ("validation", summary["eval"]["val"]["results"])):
        lines += _retrieval(split, results)
    lines += _near_duplicates(summary["data"], summary["eval"]["results"]["emoji-neardup"])
    lines += _multilingual(summary["eval"]["results"])
    lines += _search(summary["search"]) if summary["search"] else []
    lines.append(f"minutes per step: {summary['minutes']}; total {summary['total_minutes']} min")
    return "\n".join(lines)


def _stage1(stage1: dict) -> list[str]:
    cra, wordnet = stage1["cra"], stage1["eval"]["results"]["wordnet-cra"]["results"]
    return [
        "Stage 1: caption retrieval accuracy (CRA top-1) on held-out scenes (caption 1 -> caption 2)",
        "and on held-out WordNet pairs (word -> definition or synonym)",
        "| model | scenes | WordNet |",
        "|---|---|---|",
        f"| SmolLM2-135M, raw | {cra['before']['top1']:.1f} | {wordnet['raw_llm']['top1']:.1f} |",
        f"| SmolLM2-135M, after stage 1 | {cra['after']['top1']:.1f} | {wordnet['stage1_llm']['top1']:.1f} |",
        "",
    ]


def _retrieval(split: str, results: dict) -> list[str]:
    n = results["emoji-short"]["results"]["baseline"]["n_images"]
    header = " | ".join(f"{name[6:]} {d}" for name in RETRIEVAL for d in ("I2T", "T2I"))
    lines = [f"Retrieval, {split} split ({n} scenes; R@1, image->text / text->image)",
             f"| model | {header} |", "|---|" + "---|" * 2 * len(RETRIEVAL)]
    for model in MODELS:
        cells = [f"{results[name]['results'][model][f'{d}_R@1']:.1f}" for name in RETRIEVAL for d in ("i2t", "t2i")]
        lines.append(f"| {MODEL_LABELS[model]} | " + " | ".join(cells) + " |")
    notes = results["emoji-long"]["notes"].get("baseline")
    return lines + ([f"(baseline on emoji-long: {notes})"] if notes else []) + [""]


def _near_duplicates(construction: dict, bench: dict) -> list[str]:
    test = construction["test"]
    lines = [f"Near-duplicate families (test): {test['families']} families of {construction['family_size']} scenes, "
             f"{construction['objects_per_scene'][0]}-{construction['objects_per_scene'][1]} emoji, one changed "
             f"from object {construction['changed_object_from']} on; {test['identical_within_window']} of "
             f"{test['families']} families read the same in the first {construction['window_tokens']} tokens",
             "| model | I2T R@1 (ties against) | I2T R@1 (random ties) | T2I R@1 (ties against) | T2I R@1 (random ties) |",
             "|---|---|---|---|---|"]
    for model in MODELS:
        m = bench["results"][model]
        lines.append(f"| {MODEL_LABELS[model]} | {m['i2t_R@1']:.1f} | {m['i2t_R@1_random_ties']:.1f} | "
                     f"{m['t2i_R@1']:.1f} | {m['t2i_R@1_random_ties']:.1f} |")
    return lines + [""]


def _multilingual(results: dict) -> list[str]:
    lines = ["Multilingual retrieval (test; T2I R@1 / I2T R@1 per language)",
             "| model | " + " | ".join(LANGUAGES) + " |", "|---|" + "---|" * len(LANGUAGES)]
    for model in MODELS:
        cells = []
        for lang in LANGUAGES:
            m = results[f"emoji-multilingual/{lang}"]["results"][model]
            cells.append(f"{m['t2i_R@1']:.0f}/{m['i2t_R@1']:.0f}")
        lines.append(f"| {MODEL_LABELS[model]} | " + " | ".join(cells) + " |")
    ahead = sum(results[f"emoji-multilingual/{lang}"]["results"]["llm2clip"]["t2i_R@1"]
                > results[f"emoji-multilingual/{lang}"]["results"]["baseline"]["t2i_R@1"] for lang in LANGUAGES)
    return lines + [f"LLM2CLIP's T2I R@1 is ahead of the baseline's in {ahead} of {len(LANGUAGES)} languages", ""]


def _search(search: dict) -> list[str]:
    n = len(search["queries"])
    counts = ", ".join(f"{MODEL_LABELS[name]} {first} of {n}" for name, first in search["own_scene_first"].items())
    return [f"Search ({search['images']} test images; long queries whose families read the same in 77 tokens): "
            f"the query's own scene ranked first for {counts}. Gallery: {search['html']}", ""]
