"""`llm2clip eval --config`: every benchmark kind on a tiny LLM2CLIP, against numbers
computed directly; cached embeddings; bad benchmarks fail before any model loads."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from llm2clip import LLM2CLIP
from llm2clip.cli import main as cli_main
from llm2clip.data.errors import DataError
from llm2clip.eval import runner as runner_mod
from llm2clip.eval.eval_config import EvalConfig
from llm2clip.eval.retrieval import retrieval_metrics
from llm2clip.model import LLM2CLIPConfig
from llm2clip.text import CaptionEncoder

COLORS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (240, 230, 40)}


@pytest.fixture(scope="module")
def tiny_model(tiny_llama, tiny_visions, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("llm2clip") / "model"
    encoder = CaptionEncoder.from_pretrained(tiny_llama, precision="fp32")
    torch.manual_seed(0)
    LLM2CLIP(LLM2CLIPConfig(vision=tiny_visions["clip"], text_dim=encoder.dim, embed_dim=16),
             caption_encoder=encoder).save_pretrained(folder)
    return str(folder)


def write_benchmarks(root: Path) -> dict[str, Path]:
    """A Karpathy JSON (uneven captions), a CRA file and a zero-shot class folder."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i, (name, rgb) in enumerate(COLORS.items()):
        Image.new("RGB", (32, 32), rgb).save(root / "images" / f"{name}.png")
        rows.append({"image": f"images/{name}.png", "caption": [f"a {name} square", f"{name}"][: 1 + i % 2]})
        (root / "classes" / name).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (32, 32), tuple(max(0, c - 20 * k) for c in rgb)).save(
                root / "classes" / name / f"{k}.png")
    (root / "karpathy.json").write_text(json.dumps(rows))
    (root / "cra.jsonl").write_text("".join(
        json.dumps({"id": n, "a": f"a {n} thing", "b": f"something {n}"}) + "\n" for n in COLORS))
    (root / "templates.txt").write_text("a photo of {}.\n{}\n")
    return {"karpathy": root / "karpathy.json", "cra": root / "cra.jsonl", "classes": root / "classes",
            "templates": root / "templates.txt"}


def write_config(tmp_path: Path, model: str, files: dict[str, Path], out: Path) -> Path:
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"models: [{{name: tiny, kind: llm2clip, path: {model}}}]\n"
        "benchmarks:\n"
        f"  - {{name: colors, kind: karpathy, path: {files['karpathy']}}}\n"
        f"  - {{name: colors-cra, kind: cra, path: {files['cra']}, fields: [a, b]}}\n"
        f"  - {{name: colors-zs, kind: zeroshot, path: {files['classes']}, templates: {files['templates']}}}\n"
        f"  - {{name: colors-probe, kind: linear_probe, train: {files['classes']}, path: {files['classes']}, l2: 0.001}}\n"
        f"output_dir: {out}\nbatch_size: 3\n")
    return cfg


def strict_top1(scores: torch.Tensor, correct: list[int]) -> float:
    """% of rows whose correct column beats every other one (a tie counts against it)."""
    hits = [all(row[c] > row[j] for j in range(len(row)) if j != c) for row, c in zip(scores.tolist(), correct)]
    return 100 * sum(hits) / len(hits)


def expected_cra(model: LLM2CLIP) -> float:
    """CRA through the model's text side: caption `a` of each row must retrieve its own `b`."""
    with torch.no_grad():
        first = model.encode_text([f"a {n} thing" for n in COLORS])
        second = model.encode_text([f"something {n}" for n in COLORS])
    return strict_top1(first @ second.T, list(range(len(COLORS))))


def expected_zeroshot(model: LLM2CLIP, files: dict[str, Path]) -> float:
    """CLIP prompt ensembling: each template filled, encoded, normalised, averaged, normalised."""
    names = sorted(p.name for p in files["classes"].iterdir())
    templates = ["a photo of {}.", "{}"]
    with torch.no_grad():
        classes = torch.stack([torch.nn.functional.normalize(torch.nn.functional.normalize(
            model.encode_text([t.format(n) for t in templates]), dim=-1).mean(0), dim=0) for n in names])
        paths = sorted(files["classes"].glob("*/*.png"))
        images = model.encode_image([Image.open(p) for p in paths])
    return strict_top1(images @ classes.T, [names.index(p.parent.name) for p in paths])


def test_eval_matches_direct_computation_and_reuses_its_cache(tmp_path, tiny_model, monkeypatch, capsys):
    files = write_benchmarks(tmp_path / "bench")
    out = tmp_path / "eval"
    assert cli_main(["eval", "--config", str(write_config(tmp_path, tiny_model, files, out))]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())

    model = LLM2CLIP.from_pretrained(tiny_model).eval()
    rows = json.loads(files["karpathy"].read_text())
    with torch.no_grad():
        images = model.encode_image([Image.open(files["karpathy"].parent / r["image"]) for r in rows])
        texts = model.encode_text([c for r in rows for c in r["caption"]])
    owner = [i for i, r in enumerate(rows) for _ in r["caption"]]
    expected = retrieval_metrics(images, texts, owner)
    got = results["benchmarks"]["colors"]["results"]["tiny"]
    for key in ("i2t_R@1", "t2i_R@1", "i2t_R@5", "t2i_mean_rank"):
        assert got[key] == pytest.approx(expected[key])
    assert f"{got['t2i_R@1']:.1f}" in printed
    cra = results["benchmarks"]["colors-cra"]["results"]["tiny"]
    assert cra["n"] == len(COLORS) and cra["top1"] == pytest.approx(expected_cra(model))
    zeroshot = results["benchmarks"]["colors-zs"]["results"]["tiny"]
    assert zeroshot["n"] == 2 * len(COLORS) and zeroshot["top1"] == pytest.approx(expected_zeroshot(model, files))
    assert results["benchmarks"]["colors-probe"]["results"]["tiny"]["top1"] == 100  # train = test, 8 points
    assert (out / "report.md").is_file() and (out / "retrieval.png").is_file()

    # a second run reads every embedding from the cache: encoding would fail now
    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again instead of reading the cache")

    monkeypatch.setattr(runner_mod, "encode_images", no_encoding)
    monkeypatch.setattr(runner_mod, "encode_texts", no_encoding)
    assert cli_main(["eval", "--config", str(write_config(tmp_path, tiny_model, files, out))]) == 0
    assert json.loads((out / "results.json").read_text())["benchmarks"] == results["benchmarks"]


def test_a_missing_image_fails_before_any_model_loads_or_is_skipped_on_request(tmp_path, tiny_model, monkeypatch):
    files = write_benchmarks(tmp_path / "bench")
    (files["karpathy"].parent / "images" / "blue.png").unlink()
    loaded = []
    monkeypatch.setattr(runner_mod, "load_eval_model", lambda *a: loaded.append(a) or pytest.fail("loaded"))
    cfg = write_config(tmp_path, tiny_model, files, tmp_path / "eval")
    with pytest.raises(DataError, match="blue.png"):
        runner_mod.run_eval(_load(cfg))
    assert not loaded
    monkeypatch.undo()
    config = _load(cfg)
    config.skip_missing = True
    config.benchmarks = config.benchmarks[:1]
    results = runner_mod.run_eval(config)
    assert results["benchmarks"]["colors"]["results"]["tiny"]["n_images"] == 3


def test_bad_configs_are_refused_with_the_reason(tmp_path, tiny_model):
    files = write_benchmarks(tmp_path / "bench")
    config = _load(write_config(tmp_path, tiny_model, files, tmp_path / "eval"))
    config.benchmarks[0].kind = "flickr"
    with pytest.raises(ValueError, match="kind 'flickr' is not one of"):
        config.validate()
    config = _load(write_config(tmp_path, tiny_model, files, tmp_path / "eval"))
    config.benchmarks[3].train = None
    with pytest.raises(ValueError, match="linear_probe needs `train`"):
        config.validate()
    assert cli_main(["eval", "--config", str(tmp_path / "eval.yaml"), "--set", "models=[]"]) == 2


@pytest.mark.parametrize("solver", [None, "sgd", "lbfgs"])
def test_the_config_selects_the_linear_probe_solver(tmp_path, tiny_model, solver, monkeypatch):
    from llm2clip.eval import linear_probe as lp

    files = write_benchmarks(tmp_path / "bench")
    cfg = write_config(tmp_path, tiny_model, files, tmp_path / "eval")
    probe = [line for line in cfg.read_text().splitlines() if "linear_probe" in line][0]
    chosen = probe if solver is None else probe.replace("}", f", solver: {solver}}}")
    models = cfg.read_text().split("benchmarks:")[0]
    cfg.write_text(f"{models}benchmarks:\n{chosen}\noutput_dir: {tmp_path / 'eval'}\n")
    fits = []
    real_fit = lp.fit_logistic_regression
    monkeypatch.setattr(lp, "fit_logistic_regression", lambda *a, **k: fits.append(k["solver"]) or real_fit(*a, **k))
    assert cli_main(["eval", "--config", str(cfg)]) == 0
    result = json.loads((tmp_path / "eval" / "results.json").read_text())["benchmarks"]["colors-probe"]
    expected = solver or "sgd"  # the default is the paper's (§4.2.3)
    assert result["results"]["tiny"]["solver"] == expected and set(fits) == {expected}
    assert result["results"]["tiny"]["top1"] == 100  # train = test, 8 points


def test_an_unknown_probe_solver_is_refused_before_any_model_loads(tmp_path, tiny_model):
    files = write_benchmarks(tmp_path / "bench")
    config = _load(write_config(tmp_path, tiny_model, files, tmp_path / "eval"))
    config.benchmarks[3].solver = "newton"
    with pytest.raises(ValueError, match=r"benchmarks\[3\]\.solver 'newton' is not one of sgd, lbfgs"):
        config.validate()


def _load(path: Path) -> EvalConfig:
    from llm2clip.config import load_config

    return load_config(EvalConfig, path)
