"""``report.json`` and ``summary.txt``: what a preparation read, kept and skipped, and why."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REASONS = ("empty", "unreadable", "no notes", "drums only", "too short", "too long", "unsupported")
"""The kinds of skip, the words before a reason's first colon."""


def kind_of(reason: str) -> str:
    return reason.split(":", 1)[0]


@dataclass
class Report:
    source: str
    source_dir: str
    out_dir: str
    family: str
    profile: str
    workers: int
    files_read: int = 0
    """MIDI files the source listed (kept + skipped)."""
    pieces_kept: int = 0
    tokens: int = 0
    encoded: int = 0
    """Files parsed and tokenised by this run (the rest were re-used from shards)."""
    reused: int = 0
    seconds: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Every skipped file: ``{"file", "reason"}``, in file order."""

    @property
    def by_reason(self) -> dict[str, int]:
        counts = Counter(kind_of(s["reason"]) for s in self.skipped)
        return {k: counts[k] for k in (*REASONS, *sorted(set(counts) - set(REASONS))) if counts[k]}

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "n_skipped": len(self.skipped), "skipped_by_reason": self.by_reason}

    def summary(self) -> str:
        """The readable summary (also ``summary.txt``)."""
        rate = self.encoded / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"podium prepare {self.source} {self.source_dir}",
            f"  profile {self.profile} (family {self.family}), {self.workers} worker(s)",
            f"  files read     {self.files_read}",
            f"  pieces kept    {self.pieces_kept}",
            f"  tokens         {self.tokens}",
            "  splits         " + ", ".join(f"{k} {v}" for k, v in self.splits.items()),
            f"  work this run  {self.encoded} files tokenised, {self.reused} re-used, "
            f"{self.seconds:.1f} s ({rate:.1f} files/s)",
            f"  skipped        {len(self.skipped)}"
            + (
                " (" + ", ".join(f"{k} {v}" for k, v in self.by_reason.items()) + ")"
                if self.skipped
                else ""
            ),
        ]
        lines += [f"    {s['file']}: {s['reason']}" for s in self.skipped]
        lines.append(f"  output         {self.out_dir}")
        return "\n".join(lines) + "\n"

    def write(self, out: Path) -> None:
        _write_text(out / "report.json", json.dumps(self.to_json(), indent=1, ensure_ascii=False))
        _write_text(out / "summary.txt", self.summary())


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    tmp.replace(path)
