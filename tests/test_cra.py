"""`llm2clip eval cra` equals CRA computed by hand from the encoder's embeddings."""
import json

from llm2clip.cli import main as cli_main
from llm2clip.text import CaptionEncoder


def test_eval_cra_cli_on_karpathy_json(tiny_llama, tmp_path, capsys):
    data = tmp_path / "test.json"
    items = [{"image": f"{i}.jpg", "caption": [f"a photo number {i} of a cat", f"cat picture {i}", "extra"]}
             for i in range(12)] + [{"image": "lonely.jpg", "caption": ["only one caption"]}]
    data.write_text(json.dumps(items))
    out = tmp_path / "cra.json"
    assert cli_main(["eval", "cra", "--model", tiny_llama, "--data", str(data), "--out", str(out)]) == 0
    result = json.loads(out.read_text())

    encoder = CaptionEncoder.from_pretrained(tiny_llama)
    first = encoder.encode([it["caption"][0] for it in items[:12]])
    second = encoder.encode([it["caption"][1] for it in items[:12]])
    scores = first @ second.T
    wins = (scores.diagonal()[:, None] > scores).sum(1) == 11  # strictly best among 12
    assert result["n"] == 12  # the one-caption image is left out
    assert abs(result["top1"] - 100 * wins.float().mean().item()) < 1e-6
    assert json.loads(capsys.readouterr().out)["top1"] == result["top1"]


def test_eval_cra_reports_a_missing_field(tiny_llama, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": 1, "a": "x", "b": "y"}) + "\n")
    assert cli_main(["eval", "cra", "--model", tiny_llama, "--data", str(data), "--fields", "a", "zz"]) == 2
    err = capsys.readouterr().err
    assert "zz" in err and "d.jsonl" in err and "Traceback" not in err
