"""The book's results in one file: each chapter records its verdicts and key numbers as it runs, the build
collects them into summary.json, and the README quotes that file (the block between its summary markers is
written from it), so the README and the book cannot disagree."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..storage import write_json_atomically, write_text_atomically
from .claims import Claim

START, END = "<!-- summary:start (written by `make book` from book/summary.json) -->", "<!-- summary:end -->"


def record(plan, chapter: str, claims: list[Claim], facts: dict | None = None) -> None:
    """Keep a chapter's verdicts and key numbers (called at the end of each chapter page)."""
    data = {"preset": plan.preset, "chapter": chapter, "claims": [dataclasses.asdict(c) for c in claims],
            "facts": facts or {}}
    write_json_atomically(data, plan.run_dir / "summary" / f"{chapter}.json")


def collect(run_dir: Path, chapters: list[str]) -> dict:
    """The recorded chapters, in reading order."""
    out = {}
    for chapter in chapters:
        path = Path(run_dir) / "summary" / f"{chapter}.json"
        if path.exists():
            out[chapter] = json.loads(path.read_text())
    return out


def counts(claims: list[dict]) -> str:
    tally = {}
    for c in claims:
        word = c["verdict"].split(" (")[0]
        tally[word] = tally.get(word, 0) + 1
    return ", ".join(f"{n} {word}" for word, n in sorted(tally.items(), key=lambda x: -x[1]))


def render(summary: dict) -> str:
    """The README's block: per chapter, the recorded facts and the tally of verdicts."""
    lines = []
    for chapter, data in summary.items():
        facts = data["facts"]
        lines.append(f"- **{facts.get('title', chapter)}** ({counts(data['claims'])} of {len(data['claims'])} "
                     f"checked claims). " + " ".join(facts.get("sentences", [])))
    return "\n".join(lines)


def write(summary: dict, root: Path) -> None:
    """book/summary.json, and the README block between the markers rewritten from it."""
    write_json_atomically(summary, root / "book" / "summary.json")
    readme = root / "README.md"
    if readme.exists() and START in readme.read_text():
        text = readme.read_text()
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        write_text_atomically(f"{before}{START}\n{render(summary)}\n{END}{after}", readme)
