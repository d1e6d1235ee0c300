"""Report writer: JSON round trip, every number in report.md at one decimal, footnotes,
"–" for a missing model, PNGs that open, plots skipped without data."""
import json

import numpy as np
from PIL import Image

from llm2clip.eval.report import render_markdown, write_report

RETRIEVAL_KEYS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]


def retrieval(seed):
    rng = np.random.default_rng(seed)
    return {k: float(v) for k, v in zip(RETRIEVAL_KEYS, rng.uniform(0, 100, 6).round(3))}


def full_results():
    return {
        "models": ["baseline", "llm2clip"],
        "benchmarks": {
            "flickr30k": {"kind": "retrieval", "language": "en",
                          "results": {"baseline": retrieval(0), "llm2clip": retrieval(1)},
                          "notes": {"baseline": "312 of 1000 captions truncated at 77 tokens"}},
            "xm3600-de": {"kind": "retrieval", "language": "de",
                          "results": {"baseline": retrieval(2), "llm2clip": retrieval(3)}, "notes": {}},
            "xm3600-ja": {"kind": "retrieval", "language": "ja",
                          "results": {"llm2clip": retrieval(4)}, "notes": {}},  # baseline missing
            "imagenet": {"kind": "zeroshot", "language": None,
                         "results": {"baseline": {"top1": 68.349, "top5": 91.26, "n": 50000},
                                     "llm2clip": {"top1": 70.04, "top5": 92.0, "n": 50000}}},
            "imagenet-probe": {"kind": "linear_probe", "language": None,
                               "results": {"baseline": {"top1": 80.26, "top5": 95.0, "l2": 0.001}}},
            "coco-cra": {"kind": "cra", "language": None,
                         "results": {"baseline": {"top1": 25.2, "top5": 40.0}, "llm2clip": {"top1": 29.5}}},
        },
    }


def table_rows(markdown, name):
    return [line for line in markdown.splitlines() if line.startswith(f"| {name} |")]


def test_write_report_outputs(tmp_path):
    results = full_results()
    files = write_report(results, tmp_path / "out")
    assert set(files) == {"json", "markdown", "retrieval", "classification", "multilingual_radar"}
    assert json.loads(files["json"].read_text()) == results
    assert files["markdown"].read_text() == render_markdown(results)
    for key in ("retrieval", "classification", "multilingual_radar"):
        with Image.open(files[key]) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 100
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_markdown_holds_every_number_at_one_decimal():
    results = full_results()
    markdown = render_markdown(results)
    for name, bench in results["benchmarks"].items():
        shown = " ".join(table_rows(markdown, name))
        for model, metrics in bench["results"].items():
            keys = RETRIEVAL_KEYS if bench["kind"] == "retrieval" else ["top1"]
            for key in keys:
                assert f"{metrics[key]:.1f}" in shown, (name, model, key)
    # Headline table columns: model x metric, in model order.
    assert "| Benchmark | Language | baseline I2T R@1 | baseline T2I R@1 | llm2clip I2T R@1 | llm2clip T2I R@1 |" in markdown
    flickr = table_rows(markdown, "flickr30k")[0].split(" | ")
    base, ours = results["benchmarks"]["flickr30k"]["results"].values()
    assert flickr[2:6] == [f"{base['i2t_R@1']:.1f}[^1]", f"{base['t2i_R@1']:.1f}",
                           f"{ours['i2t_R@1']:.1f}", f"{ours['t2i_R@1']:.1f} |"]
    assert "[^1]: baseline on flickr30k: 312 of 1000 captions truncated at 77 tokens" in markdown
    assert "| imagenet | 68.3 | 70.0 |" in markdown
    assert "| coco-cra | 25.2 | 29.5 |" in markdown


def test_missing_model_shows_dash():
    markdown = render_markdown(full_results())
    ja_headline, ja_secondary = table_rows(markdown, "xm3600-ja")
    assert ja_headline.startswith("| xm3600-ja | ja | – | – | ")
    assert ja_secondary.count("–") == 4
    assert "| imagenet-probe | 80.3 | – |" in markdown


def test_plots_are_skipped_without_data(tmp_path):
    only_zeroshot = {"models": ["a"], "benchmarks": {
        "cifar": {"kind": "zeroshot", "language": None, "results": {"a": {"top1": 50.0}}},
        "empty-retrieval": {"kind": "retrieval", "language": "en", "results": {}}}}
    files = write_report(only_zeroshot, tmp_path)
    assert set(files) == {"json", "markdown", "classification"}
    assert "| empty-retrieval | en | – | – |" in (tmp_path / "report.md").read_text()
    one_language = {"models": ["a", "b"], "benchmarks": {
        "flickr": {"kind": "retrieval", "language": "en", "results": {"a": retrieval(0)}}}}
    assert set(write_report(one_language, tmp_path / "2")) == {"json", "markdown", "retrieval"}


def test_numpy_values_are_written(tmp_path):
    results = {"models": ["a"], "benchmarks": {
        "cifar": {"kind": "zeroshot", "language": None, "results": {"a": {"top1": np.float32(12.34), "n": np.int64(7)}}}}}
    assert "| cifar | 12.3 |" in render_markdown(results)
    files = write_report(results, tmp_path)
    assert json.loads(files["json"].read_text())["benchmarks"]["cifar"]["results"]["a"]["n"] == 7
