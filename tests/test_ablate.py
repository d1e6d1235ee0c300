"""`llm2clip ablate TABLE --demo DIR --fast`: the paper's ablation tables in miniature on a
--fast demo folder (demo/ablate.py). The expectations come from outside the module: the
paper's row names written out here, the recipes' own YAML, the runs' saved configs."""
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from llm2clip.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
RETRIEVAL = ["short I2T", "short T2I", "long I2T", "long T2I", "near-dup I2T", "near-dup T2I"]


def _recipe(stem: str) -> dict:
    return yaml.safe_load((REPO / "configs" / "ablations" / f"{stem}.yaml").read_text())


def _run_config(demo: Path, row: dict) -> dict:
    return yaml.safe_load((demo / row["stage2_run"] / "config.yaml").read_text())


def _weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _ablate(demo: Path, *args: str) -> dict:
    assert cli_main(["ablate", *args, "--demo", str(demo), "--fast"]) == 0
    return json.loads((demo / "ablations" / f"table{args[0]}.json").read_text())


@pytest.mark.slow
def test_table7_rows_are_the_papers_with_their_recipes_dense_ratio(fast_demo_steps):
    demo = fast_demo_steps
    table = _ablate(demo, "7")
    names = [r["row"] for r in table["rows"]]
    assert names == ["CLIP", "+LLM2CLIP (100%)", "+LLM2CLIP (75%)", "+LLM2CLIP (50%)", "+LLM2CLIP (25%)",
                     "+LLM2CLIP (0%)"]
    assert [r["row"] for r in table["not_run"]] == ["Directly Finetune (50%)"]
    assert table["columns"] == RETRIEVAL
    rows = {r["row"]: r for r in table["rows"]}
    for name, stem in (("+LLM2CLIP (100%)", "table7-dense-100"), ("+LLM2CLIP (75%)", "table7-dense-75"),
                       ("+LLM2CLIP (25%)", "table7-dense-25"), ("+LLM2CLIP (0%)", "table7-dense-0")):
        saved = _run_config(demo, rows[name])
        assert saved["data"]["dense_ratio"] == _recipe(stem)["data"]["dense_ratio"], name
        # only the ablated key is the recipe's: the tower and the encoder stay the demo's
        assert saved["model"]["vision"] == "efficientnet-lite0"
        assert saved["model"]["caption_encoder"] == str(demo / "stage1" / "final")
    # the paper's default (50 %) is the demo's own stage 2, reused, not trained again
    assert rows["+LLM2CLIP (50%)"]["stage2_run"] == "stage2/llm2clip"
    assert _run_config(demo, rows["+LLM2CLIP (50%)"])["data"]["dense_ratio"] == 0.5
    # different ratios draw different captions, so they train different heads
    digests = {name: _weights_digest(demo / rows[name]["model"]) for name in names[1:]}
    assert len(set(digests.values())) == len(digests), digests
    for row in table["rows"]:
        assert set(row["cells"]) == set(RETRIEVAL) and all(0 <= v <= 100 for v in row["cells"].values())
    # the numbers are the eval runner's, for the test split
    results = json.loads((demo / "ablations" / "table7" / "eval" / "results.json").read_text())
    short = results["benchmarks"]["emoji-short"]["results"]
    assert rows["+LLM2CLIP (0%)"]["cells"]["short I2T"] == short["7 +LLM2CLIP (0%)"]["i2t_R@1"]
    n_test = sum(1 for _ in (demo / "data" / "test_captions.jsonl").open())
    assert short["1 CLIP"]["n_images"] == n_test
    markdown = (demo / "ablations" / "table7.md").read_text()
    assert "Scale: the demo's --fast size" in markdown and "test split" in markdown
    for name in names + ["Directly Finetune (50%)"]:
        assert name in markdown


@pytest.mark.slow
def test_table9_rows_train_their_own_stage1_and_store(fast_demo_steps):
    demo = fast_demo_steps
    table = _ablate(demo, "9", "--rows", "1,2,7")
    assert [r["row"] for r in table["rows"]] == [
        "Lora, AvgPool, Bidirectional, Supervise Simcse", "Lora, AvgPool, Bidirectional, Un-supervise Simcse",
        "Frozen, Linear Adaptor, AvgPool, Bidirectional, Supervise Simcse"]
    assert table["columns"] == RETRIEVAL + ["CRA"]
    default, unsupervised, frozen = table["rows"]
    # the default row is the demo's stage 1 and store; the others have their own
    assert default["encoder"] == "stage1/final" and default["store"] == "embeddings/llm2clip"
    assert len({default["store"], unsupervised["store"], frozen["store"]}) == 3
    cra = json.loads((demo / "stage1" / "cra.json").read_text())
    assert default["cells"]["CRA"] == cra["after"]["top1"]
    saved = [yaml.safe_load((demo / r["encoder"]).parent.joinpath("config.yaml").read_text()) for r in table["rows"][1:]]
    assert saved[0]["train"]["simcse"] == "unsupervised" and saved[0]["data"]["text_pair_ratio"] == 0
    recipe = _recipe("table9-frozen-linear-adaptor")["model"]
    assert saved[1]["model"]["freeze_llm"] is True and saved[1]["model"]["lora"] is None
    assert saved[1]["model"]["adaptor"] == recipe["adaptor"]
    for s in saved:  # the demo's steps, batch and model, not the paper's
        assert (s["train"]["max_steps"], s["model"]["name"]) == (4, "smollm2-135m")
    assert all(r["cells"]["CRA"] is not None for r in table["rows"])


@pytest.mark.slow
def test_table11_times_each_mode_for_the_same_steps(fast_demo_steps):
    demo = fast_demo_steps
    table = _ablate(demo, "11")
    rows = {r["number"]: r for r in table["rows"]}
    assert [r["row"] for r in table["rows"]] == [
        "Llama-3.1-8B, LLM Frozen + Linear Adaptor + Offline-loading", "Llama-3.1-8B-CC, LLM LoRA",
        "Llama-3.1-8B-CC, LLM Frozen + Linear Adaptor", "Llama-3.1-8B-CC, LLM Frozen + Linear Adaptor + Offline-loading"]
    modes = {n: _run_config(demo, r)["train"]["mode"] for n, r in rows.items()}
    assert modes == {"2": "offline", "3": "online_lora", "4": "online_frozen", "5": "offline"}
    assert {_run_config(demo, r)["train"]["max_steps"] for r in rows.values()} == {2}
    # row 2 has no stage 1: the raw LLM's encoder and store
    assert rows["2"]["store"] == "embeddings/llm2clip_raw_llm"
    assert all(r["cells"]["s/step"] > 0 for r in rows.values())
    # an online step runs the LLM on the batch's captions; an offline step reads them
    assert rows["5"]["cells"]["s/step"] < rows["4"]["cells"]["s/step"]


@pytest.mark.slow
def test_table12_says_why_it_cannot_run(fast_demo_steps, capsys):
    table = _ablate(fast_demo_steps, "12")
    assert table["rows"] == [] and "not part of this project" in table["not_run"][0]["why"]
    assert "not part of this project" in capsys.readouterr().out


def test_bad_input_gets_one_line_naming_it(tmp_path, capsys):
    assert cli_main(["ablate", "13", "--demo", str(tmp_path)]) == 2
    assert "no ablation table 13" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a demo")
    assert cli_main(["ablate", "7", "--demo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--demo {tmp_path}: not an `llm2clip demo` folder" in err and len(err.strip().splitlines()) == 1
    demo = tmp_path / "demo"
    (demo / "data").mkdir(parents=True)
    (demo / "data" / "test_captions.jsonl").write_text('{"id": 1}\n' * 200)  # the full size's 200 test scenes
    assert cli_main(["ablate", "7", "--demo", str(demo), "--fast"]) == 2
    assert "made without --fast" in capsys.readouterr().err
    assert cli_main(["ablate", "7", "--demo", str(demo), "--rows", "2"]) == 2
    assert "--rows 2: Table 7 has no runnable row of that number" in capsys.readouterr().err
