"""What a reader kept and skipped: counted per reason, with the first few rows named."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

EXAMPLES_PER_REASON = 3


@dataclass
class ReadStats:
    path: str
    rows: int = 0  # rows (lines / JSON items) seen
    kept: int = 0  # records returned
    skipped: Counter = field(default_factory=Counter)  # reason -> rows skipped
    fixed: Counter = field(default_factory=Counter)  # reason -> captions dropped or clipped in kept rows
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> first row numbers

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self._remember(reason, where)

    def fix(self, reason: str, where: str) -> None:
        self.fixed[reason] += 1
        self._remember(reason, where)

    def _remember(self, reason: str, where: str) -> None:
        seen = self.examples.setdefault(reason, [])
        if len(seen) < EXAMPLES_PER_REASON:
            seen.append(where)

    def summary(self) -> str:
        text = f"{self.path}: {self.kept} of {self.rows} rows kept"
        parts = [f"{n} skipped ({reason}; e.g. {', '.join(self.examples[reason])})"
                 for reason, n in sorted(self.skipped.items())]
        parts += [f"{n} captions {reason} (e.g. {', '.join(self.examples[reason])})"
                  for reason, n in sorted(self.fixed.items())]
        return text + ("; " + "; ".join(parts) if parts else "")
