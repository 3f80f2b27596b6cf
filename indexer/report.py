"""What a run did: counts, problems, and how they are shown (text, --json, --errors FILE)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .scan import Problem

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
COUNTS = ("added", "updated", "moved", "unchanged", "removed", "failed")


@dataclass
class Summary:
    db: str
    added: int = 0  # new path, new content: embedded
    updated: int = 0  # known path whose content changed: embedded again (or vector reused if known content)
    moved: int = 0  # new path with content already in the index (moved, renamed, copied): vector reused
    unchanged: int = 0  # same size and mtime (not even opened), or same content hash
    removed: int = 0  # gone from disk (inside the folders given), or absorbed into an enclosing root
    captions_added: int = 0
    captions_removed: int = 0
    captions_embedded: int = 0  # by the caption model (new captions, or all of them with a new caption model)
    images_total: int = 0
    captions_total: int = 0
    seconds: float = 0.0
    maintenance: list[str] = field(default_factory=list)  # indexes built, rebuilt or dropped
    vector_index_note: str | None = None  # why the chosen vector index is not built yet
    problems: list[Problem] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.problems)

    @property
    def exit_status(self) -> int:
        return EXIT_SOME_FAILED if self.problems else EXIT_OK

    def as_dict(self) -> dict:
        return {
            **{name: getattr(self, name) for name in COUNTS},
            "captions": {"added": self.captions_added, "removed": self.captions_removed, "total": self.captions_total,
                         "embedded_by_caption_model": self.captions_embedded},
            "images_total": self.images_total,
            "seconds": round(self.seconds, 2),
            "db": self.db,
            "maintenance": self.maintenance,
            "vector_index_note": self.vector_index_note,
        }

    def text(self) -> str:
        processed = self.added + self.updated + self.moved
        rate = f" ({processed / self.seconds:.1f} photos/s)" if processed and self.seconds > 0 else ""
        lines = [
            f"indexed into {self.db} in {_duration(self.seconds)}{rate}",
            "  " + ", ".join(f"{name} {getattr(self, name)}" for name in COUNTS),
            f"  captions: {self.captions_added} added, {self.captions_removed} removed" +
            (f", {self.captions_embedded} embedded by the caption model" if self.captions_embedded else ""),
            f"  the index now holds {self.images_total} photos and {self.captions_total} captions",
        ]
        lines += [f"  {what}" for what in self.maintenance]
        if self.vector_index_note:
            lines.append(f"  vector index: {self.vector_index_note}")
        if self.problems:
            lines.append(f"  {self.failed} skipped (reasons above; --errors FILE writes the list)")
        return "\n".join(lines)


def write_errors(path: str, problems: list[Problem]) -> None:
    """JSON Lines, one {"path", "reason", "kind"} per problem; an empty file when all went well."""
    with open(path, "w", encoding="utf-8") as f:
        for problem in problems:
            f.write(json.dumps(problem.as_dict(), ensure_ascii=False) + "\n")


def problem_line(problem: Problem) -> str:
    return f"skipped {problem.path}: {problem.reason}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
