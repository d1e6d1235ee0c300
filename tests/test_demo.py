"""`llm2clip demo --fast` end to end on the embedded models and data (a few minutes)."""
import json
import math

import pytest

from llm2clip.cli import main as cli_main
from llm2clip.demo import MODELS, STAGE2_FIELDS


def _finite_percentages(metrics: dict) -> bool:
    rates = [v for k, v in metrics.items() if "R@" in k or k.startswith("top")]
    return bool(rates) and all(math.isfinite(v) and 0 <= v <= 100 for v in rates)


@pytest.mark.slow
def test_fast_demo_runs_end_to_end_and_reuses_finished_steps(tmp_path, capsys, caplog):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    n_test = summary["size"]["n_test"]

    cra = summary["stage1"]["cra"]
    for when in ("before", "after"):
        assert cra[when]["n"] == n_test and _finite_percentages(cra[when])
        assert f"{cra[when]['top1']:.1f}" in printed

    benchmarks = summary["eval"]["results"]
    assert set(benchmarks) == {f"emoji-{f}" for f in STAGE2_FIELDS}
    for name, bench in benchmarks.items():
        assert set(bench["results"]) == set(MODELS), name
        for model, metrics in bench["results"].items():
            assert metrics["n_images"] == n_test and _finite_percentages(metrics), (name, model)
            assert math.isfinite(metrics["t2i_mean_rank"]) and 1 <= metrics["t2i_mean_rank"] <= n_test
    # the baseline's 77-token text tower cuts the long captions, and the report says so
    assert "truncated at 77 tokens" in benchmarks["emoji-long"]["notes"]["baseline"]
    assert f"{benchmarks['emoji-short']['results']['llm2clip']['t2i_R@1']:.1f}" in printed

    for artifact in ("stage1/final/caption_encoder.json", "baseline/dual_encoder.json",
                     "embeddings/llm2clip/store.json", "embeddings/llm2clip_raw_llm/store.json",
                     "stage2/llm2clip/final/llm2clip.json", "stage2/llm2clip_raw_llm/final/llm2clip.json",
                     "eval/results.json", "eval/report.md", "eval/retrieval.png"):
        assert (out / artifact).is_file(), artifact

    caplog.set_level("INFO")
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 0  # second run: nothing recomputed
    for step in ("data", "baseline", "stage1", "embed", "stage2"):
        assert f"{step}: reusing" in caplog.text, step
    again = json.loads((out / "summary.json").read_text())
    assert again["stage1"] == summary["stage1"] and again["eval"]["results"] == summary["eval"]["results"]

    # a test caption edited after `embed`: the evaluation from the store refuses it
    test_file = out / "data" / "test_captions.jsonl"
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    rows[0]["long"] += " (edited)"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 2
    assert f"sample id {rows[0]['id']!r} field 'long'" in capsys.readouterr().err
