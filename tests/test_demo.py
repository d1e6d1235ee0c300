"""`llm2clip demo --fast` end to end on the embedded model and data (about a minute)."""
import json
import math

import pytest

from llm2clip.cli import main as cli_main


@pytest.mark.slow
def test_fast_demo_runs_end_to_end_and_reuses_finished_steps(tmp_path, capsys, caplog):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    cra = summary["stage1"]["cra"]
    for when in ("before", "after"):
        assert cra[when]["n"] == 48
        for key in ("top1", "top5"):
            assert math.isfinite(cra[when][key]) and 0 <= cra[when][key] <= 100
            assert f"{cra[when][key]:.1f}" in printed
    assert (out / "stage1" / "final" / "caption_encoder.json").is_file()
    assert (out / "data" / "test_captions.jsonl").read_text().count("\n") == 48

    caplog.set_level("INFO")
    assert cli_main(["demo", "--fast", "--out", str(out)]) == 0  # second run: nothing recomputed
    assert "stage1: reusing" in caplog.text and "data: reusing" in caplog.text
    assert json.loads((out / "summary.json").read_text())["stage1"] == summary["stage1"]
