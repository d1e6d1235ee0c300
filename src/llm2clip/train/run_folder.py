"""What a run folder says about itself: every start is recorded as a fresh start or a
resume (`run-history.jsonl`), and a fresh start sets the outputs of an earlier run that
left no checkpoint (it failed early) aside in `earlier-run-<UTC time>/`, so its logs are
neither appended to nor lost.

Why set aside rather than refuse: without a checkpoint there is nothing to resume, and the
usual next step after fixing a crash is to rerun the same command; refusing would make
the user delete the old logs by hand, losing the record of what failed.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger("llm2clip")

HISTORY = "run-history.jsonl"
# everything a run writes into its folder besides checkpoints/ (a folder holding
# finished checkpoints is never started fresh: prepare_output refuses it)
RUN_OUTPUTS = re.compile(r"^(config\.yaml|metrics\.jsonl|cra\.json|final|final-merged|skipped-rank\d+\.jsonl)$")


def set_earlier_run_aside(out: Path) -> Path | None:
    """Move an earlier run's outputs from `out` into a new `earlier-run-*` folder; return it
    (None when there was nothing to move)."""
    found = sorted(p for p in out.iterdir() if RUN_OUTPUTS.match(p.name)) if out.is_dir() else []
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    backup, n = out / f"earlier-run-{stamp}", 1
    while backup.exists():
        backup, n = out / f"earlier-run-{stamp}-{n}", n + 1
    backup.mkdir()
    for path in found:
        os.replace(path, backup / path.name)
    log.warning("%s: a fresh start; the earlier run's outputs (%s) were moved to %s", out,
                ", ".join(p.name for p in found), backup.name)
    return backup


def record_start(out: Path, resume: bool, earlier: Path | None = None) -> None:
    """Append this start to the folder's history (one JSON line per start)."""
    row = {"start": "resume" if resume else "fresh", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "earlier_run_moved_to": earlier.name if earlier else None}
    with open(out / HISTORY, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
    log.info("%s: %s (recorded in %s)", out, "resuming" if resume else "a fresh start", HISTORY)
