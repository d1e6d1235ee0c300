"""The docs refer to nothing outside the repository: no file names the out-of-repo
DESIGN.md, and every repository path the README or docs/ link to exists."""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    suffixes = {".md", ".py", ".toml", ".yaml", ".yml", ".txt", ".sh", ""}
    return [REPO / n for n in names if Path(n).suffix in suffixes and (REPO / n).is_file()]


def test_no_file_cites_the_design_file_outside_the_repository():
    citing = [str(p.relative_to(REPO)) for p in tracked_text_files()
              if p.name != "test_docs.py" and "DESIGN.md" in p.read_text(encoding="utf-8", errors="replace")]
    assert not citing, citing
    assert (REPO / "docs" / "design.md").is_file()


def test_every_linked_repository_path_exists():
    missing = []
    for doc in [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text(encoding="utf-8")):
            if "://" not in target and not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not missing, missing
