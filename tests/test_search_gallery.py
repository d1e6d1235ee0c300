"""The `search --html` gallery in a real headless browser (Debian's chromium): every
thumbnail loads and every score is shown. The page is opened as a user would open it
(from disk); a probe script added to a copy of it records, after the load event, each
image's decoded width and each score's rendered box, and `--dump-dom` hands back the DOM.
(Chromium's own --dump-dom needs no driver: no chromedriver/playwright to install and keep
in step with the browser's version.)"""
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from llm2clip.cli import main as cli_main
from llm2clip.demo.rendering import render_scene
from llm2clip.demo.scenes import make_scenes
from llm2clip.search import Index

from test_search import QUERIES, models  # noqa: F401 - models: the module-scoped fixture

PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-probe-width", img.complete ? img.naturalWidth : -1);
  }
  for (const score of document.querySelectorAll(".score")) {
    const box = score.getBoundingClientRect();
    score.setAttribute("data-probe-shown", box.width > 0 && box.height > 0 ? "yes" : "no");
  }
  document.body.setAttribute("data-probed", "yes");
});
</script>"""


def browser_dom(page: Path, profile: Path) -> str:
    """The DOM of `page` after load, with the probe's attributes, from headless chromium."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (scripts/system-deps.sh, run by `make install`, installs it)"
    probed = page.with_name("probed-" + page.name)  # same folder: the relative thumbnail paths still resolve
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Elements(HTMLParser):
    """Every img's attributes, every .score span's attributes and text, the body's attributes."""

    def __init__(self):
        super().__init__()
        self.images, self.scores, self.body, self._in_score = [], [], {}, None
        self.queries, self._in_query = [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "body":
            self.body = attrs
        elif tag == "span" and attrs.get("class") == "score":
            self._in_score = attrs
            self.scores.append([attrs, ""])
        elif tag == "q":
            self._in_query = True
            self.queries.append("")

    def handle_data(self, data):
        if self._in_score is not None:
            self.scores[-1][1] += data
        if self._in_query:
            self.queries[-1] += data

    def handle_endtag(self, tag):
        if tag == "span":
            self._in_score = None
        if tag == "q":
            self._in_query = False


def parse(dom: str) -> Elements:
    elements = Elements()
    elements.feed(dom)
    assert elements.body.get("data-probed") == "yes", "the probe did not run (no load event?)"
    return elements


@pytest.fixture(scope="module")
def gallery(models, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("gallery")
    for scene in make_scenes(8, seed=5):
        render_scene(scene, size=64).save(root / f"{scene.id}.png")
    index = root / "idx"
    assert cli_main(["index", "--model", models["a"], "--images", str(root), "--out", str(index)]) == 0
    page = root / "out" / "results.html"
    assert cli_main(["search", str(index), *QUERIES[:2], "--k", "4", "--html", str(page)]) == 0
    return page, index


def test_every_thumbnail_loads_and_every_score_is_shown(gallery, tmp_path):
    page, index = gallery
    elements = parse(browser_dom(page, tmp_path / "profile"))
    assert len(elements.images) == 2 * 4
    for image in elements.images:
        assert int(image["data-probe-width"]) > 0, f"thumbnail did not load: {image['src']}"
    assert elements.queries == QUERIES[:2]
    expected = [f"{hit.score:.3f}" for hits in Index.open(index).search(QUERIES[:2], k=4) for hit in hits]
    assert [text for _, text in elements.scores] == expected
    assert all(attrs.get("data-probe-shown") == "yes" for attrs, _ in elements.scores)


def test_the_probe_sees_a_thumbnail_that_does_not_load(gallery, tmp_path):
    """The same check fails when a thumbnail file is missing: the test can fail."""
    broken = tmp_path / "broken"
    shutil.copytree(gallery[0].parent, broken)
    thumbnails = sorted((broken / "results_files").iterdir())
    thumbnails[0].unlink()
    elements = parse(browser_dom(broken / "results.html", tmp_path / "profile"))
    missing = [thumbnails[0].name in image["src"] for image in elements.images]
    loaded = [int(image["data-probe-width"]) > 0 for image in elements.images]
    assert any(missing) and loaded == [not gone for gone in missing]
