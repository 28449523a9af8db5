"""The README quotes the book: its summary block is written from book/summary.json, which the default build writes."""
from __future__ import annotations

import json

from ke.book import summary as S
from ke.book.presets import project_root

CLAIM = {"figure": "Fig. 2", "statement": "entropy falls", "paper": "-0.3%", "ours": "+0.1%",
         "verdict": "disagrees (2 of 3 seeds)"}


def test_write_replaces_only_the_block_between_the_markers(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "README.md").write_text(f"# title\n\n{S.START}\nstale\n{S.END}\n\n## after\n")
    data = {"entropy": {"claims": [CLAIM, {**CLAIM, "verdict": "agrees"}],
                        "facts": {"title": "Knowledge entropy", "sentences": ["It rose."]}}}
    S.write(data, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# title\n\n") and text.endswith(f"{S.END}\n\n## after\n") and "stale" not in text
    assert "- **Knowledge entropy** (1 disagrees, 1 agrees of 2 checked claims). It rose." in text
    assert json.loads((tmp_path / "book" / "summary.json").read_text()) == data


def test_the_committed_readme_quotes_the_committed_summary():
    root = project_root()
    block = (root / "README.md").read_text().split(S.START, 1)[1].split(S.END, 1)[0]
    assert block.strip() == S.render(json.loads((root / "book" / "summary.json").read_text())).strip()
