"""`llm2clip demo --fast` end to end on the embedded models and data (a few minutes):
two runs in fresh folders write the same summary.json, and a third run in a finished
folder recomputes nothing."""
import json
import math

import pytest

from llm2clip.cli import main as cli_main
from llm2clip.demo import MODELS, STAGE2_FIELDS, validation
from llm2clip.demo.emoji_pool import LANGUAGES
from llm2clip.demo.near_duplicates import FAMILY_SIZE
from llm2clip.demo.search_step import SEARCH_MODELS, TOP_K


def _finite_percentages(metrics: dict) -> bool:
    rates = [v for k, v in metrics.items() if "R@" in k or k.startswith("top")]
    return bool(rates) and all(math.isfinite(v) and 0 <= v <= 100 for v in rates)


def _losses(metrics_file) -> list[float]:
    return [row["loss"] for row in map(json.loads, metrics_file.read_text().splitlines()) if "loss" in row]


@pytest.mark.slow
def test_fast_demo_is_deterministic_learns_and_reuses_finished_steps(tmp_path, capsys, caplog):
    out = tmp_path / "first" / "demo"
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    n_test = summary["size"]["n_test"]

    cra = summary["stage1"]["cra"]
    for when in ("before", "after"):
        assert cra[when]["n"] == n_test and _finite_percentages(cra[when])
        assert f"{cra[when]['top1']:.1f}" in printed
    # stage 1 makes the LLM a better caption encoder even in 2 steps: 50.0 -> 75.0 on this machine
    assert cra["after"]["top1"] > cra["before"]["top1"], cra

    size = summary["size"]
    benchmarks = summary["eval"]["results"]
    families = size["n_test_families"] * FAMILY_SIZE
    expected = {**{f"emoji-{f}": n_test for f in STAGE2_FIELDS}, "emoji-neardup": families,
                **{f"emoji-multilingual/{lang}": size["n_multilingual"] for lang in LANGUAGES}}
    val = summary["eval"]["val"]["results"]
    assert set(benchmarks) == set(expected) and len(LANGUAGES) == 13
    assert set(val) == {"emoji-short", "emoji-long", "emoji-neardup"}  # choices are made on val, never test
    for results, sizes in ((benchmarks, expected), (val, {"emoji-short": size["n_val"], "emoji-long": size["n_val"],
                                                          "emoji-neardup": size["n_val_families"] * FAMILY_SIZE})):
        for name, bench in results.items():
            assert set(bench["results"]) == set(MODELS), name
            for model, metrics in bench["results"].items():
                n = sizes[name]
                assert metrics["n_images"] == n and _finite_percentages(metrics), (name, model)
                assert math.isfinite(metrics["t2i_mean_rank"]) and 1 <= metrics["t2i_mean_rank"] <= n
    for lang in LANGUAGES:
        assert benchmarks[f"emoji-multilingual/{lang}"]["language"] == lang
    # the near-duplicate families read the same to a 77-token tower, all of them
    construction = summary["data"]
    assert construction["test"]["identical_within_window"] == construction["test"]["families"] == size["n_test_families"]
    assert "R@1 with ties broken at random" in (out / "eval" / "report.md").read_text()
    wordnet = summary["stage1"]["eval"]["results"]["wordnet-cra"]["results"]
    assert set(wordnet) == {"raw_llm", "stage1_llm"} and all(_finite_percentages(m) for m in wordnet.values())
    assert wordnet["raw_llm"]["n"] == size["n_wordnet_heldout"]
    # the baseline's 77-token text tower cuts the long captions, and the report says so
    assert "truncated at 77 tokens" in benchmarks["emoji-long"]["notes"]["baseline"]
    assert f"{benchmarks['emoji-short']['results']['llm2clip']['t2i_R@1']:.1f}" in printed
    # stage 2 fits its pairs: the last steps' loss is well below the first steps'
    for model in ("llm2clip", "llm2clip_raw_llm"):
        losses = _losses(out / "stage2" / model / "metrics.jsonl")
        assert sum(losses[-3:]) < 0.5 * sum(losses[:3]), (model, losses)

    # the demo ends with a search: each model's top 5 for every family's first walk caption
    search = summary["search"]
    assert len(search["queries"]) == size["n_test_families"] and search["images"] == n_test + families
    for query, own in zip(search["queries"], search["query_images"]):
        for model in SEARCH_MODELS:
            hits = search["hits"][query][model]
            assert len(hits) == TOP_K and [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
            assert all((out / key).is_file() for key, _ in hits), hits
        assert (out / own).is_file()
    assert all(0 <= n <= len(search["queries"]) for n in search["own_scene_first"].values())

    for artifact in ("eval/search.html", "eval/search.png", "stage1/final/caption_encoder.json", "baseline/dual_encoder.json",
                     "embeddings/llm2clip/store.json", "embeddings/llm2clip_raw_llm/store.json",
                     "stage2/llm2clip/final/llm2clip.json", "stage2/llm2clip_raw_llm/final/llm2clip.json",
                     "eval/results.json", "eval/report.md", "eval/retrieval.png", "eval/multilingual_radar.png",
                     "eval/val/results.json", "eval/stage1/report.md", "timings.json"):
        assert (out / artifact).is_file(), artifact

    # the settings are chosen on the validation split: every variant scored there, each side's best named
    assert validation.main(["--demo", str(out), "--fast"]) == 0
    sweep = json.loads((out / "validation" / "sweep.json").read_text())
    assert set(sweep["variants"]) == {"baseline-20steps", "llm2clip-1block-20steps", "llm2clip-2block-20steps"}
    assert all(0 <= row["mean"] <= 100 and len(row) == 7 for row in sweep["variants"].values())
    best = max(("llm2clip-1block-20steps", "llm2clip-2block-20steps"), key=lambda n: sweep["variants"][n]["mean"])
    assert sweep["chosen"] == {"baseline": "baseline-20steps", "llm2clip": best}

    # a second run in a fresh folder writes the same summary, byte for byte
    fresh = tmp_path / "second" / "demo"
    assert cli_main(["demo", "--fast", "--out", str(fresh)]) == 0
    assert (fresh / "summary.json").read_text() == (out / "summary.json").read_text()
    for results in ("eval/results.json", "eval/val/results.json", "eval/stage1/results.json"):
        assert (fresh / results).read_text() == (out / results).read_text(), results

    caplog.set_level("INFO")
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 0  # a finished folder: nothing recomputed
    for step in ("data", "baseline", "stage1", "embed", "stage2"):
        assert f"{step}: reusing" in caplog.text, step
    assert json.loads((out / "summary.json").read_text()) == summary

    # a test caption edited after `embed`: the evaluation from the store refuses it
    test_file = out / "data" / "test_captions.jsonl"
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    rows[0]["long"] += " (edited)"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 2
    assert f"sample id {rows[0]['id']!r} field 'long'" in capsys.readouterr().err
