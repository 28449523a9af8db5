"""The README quotes the book: its summary block is written from book/summary.json, which the default build writes."""
from __future__ import annotations

import json
import re

from ke.book import summary as S
from ke.book.claims import Claim, Verdict, Word
from ke.book.presets import project_root


def claim(word: Word = Word.DISAGREES, count: str = "2 of 3 seeds", **fields) -> dict:
    """A claim as a chapter records it (summary.entry), with `fields` replaced."""
    base = dict(figure="Fig. 2", statement="entropy falls", paper="-0.3%", ours="+0.1%")
    return S.entry(Claim(**{**base, **fields}, verdict=Verdict(word, count)))


CLAIM = claim()


def test_write_replaces_only_the_block_between_the_markers(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "README.md").write_text(f"# title\n\n{S.START}\nstale\n{S.END}\n\n## after\n")
    data = {"entropy": {"claims": [CLAIM, claim(Word.AGREES, "")],
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


# ------------------------------------------------------------------------------------------- results at a glance
VALIDITY = {"model": "OLMo mini (1B role)", "seeds": [0, 1, 2], "world_accuracy": 0.328,
            "world_accuracy_by_seed": {"0": 0.33, "1": 0.31, "2": 0.344}, "chance": 0.25,
            "acquisition_by_start": {"0.1": -3.5, "0.5": 2.25, "1.0": 4.0},
            "acquisition_para_by_start": {"0.1": 1.0, "0.5": 2.0, "1.0": 3.0},
            "entropy_change_from_20pct": {"0": -0.157, "1": 0.02},
            "entropy_change_ci": {"0": [-0.2, -0.1], "1": [-0.01, 0.05]},
            "criteria": {"a": True, "b": False, "c": True}}
SPREAD_TEXT = "drop -0.157 ± 0.063 (sd over 3 seeds; range -0.195 … -0.084) nats"


def fixture_summary(validity: bool = True) -> dict:
    out = {"entropy": {"claims": [CLAIM, claim(Word.AGREES, "", figure="Fig. 3"),
                                  claim(Word.PARTLY, "1 of 2", figure="Fig. 99")],
                       "facts": {"title": "Knowledge entropy", "sentences": ["It rose."]}},
           "regime": {"claims": [claim(Word.NOT_SIGNIFICANT, "", figure="regime: decay", ours=SPREAD_TEXT),
                                 claim(Word.SELECTED, "", figure="model system")],
                      "facts": {"title": "Regime", "sentences": []}}}
    return {"validity": VALIDITY, **out} if validity else out


def table_rows(text: str, first: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header starts with `first`, as cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_glance_shows_validity_counts_and_every_claim_with_a_linked_badge():
    data = fixture_summary()
    anchors = {"entropy-fig-2", "entropy-fig-3", "entropy-summary"}
    text = S.glance(data, book=True, anchors=anchors)
    # validity: accuracy against chance, A > 0 counted from the numbers, the entropy change with its interval
    assert "answers 32.8% of its world's questions, chance 25%" in text
    assert "seed 0: 33.0%, seed 1: 31.0%, seed 2: 34.4%" in text
    positive = sum(a > 0 for a in VALIDITY["acquisition_by_start"].values())
    assert f"A > 0 for the injected facts at {positive} of 3 starts (10%: -3.5%, 50%: +2.2%, 100%: +4.0%)" in text
    assert "A > 0 for their paraphrases at 3 of 3 starts" in text
    assert "seed 0: -0.157 [-0.200, -0.100]; seed 1: +0.020 [-0.010, +0.050]" in text
    assert "selection criteria met: a, c; not met: b." in text
    assert text.index("The model system") < text.index("| chapter |")
    # counts per chapter: one column per verdict word present, in the badges' order
    header = next(line for line in text.splitlines() if line.startswith("| chapter | ") and "claims |" in line)
    words = [w for w in ("agrees", "partly", "not significant", "disagrees", "selected")]
    assert [re.sub(r"<[^>]+>", "", h).strip() for h in header.strip("|").split(" | ")] == \
        ["chapter", *words, "claims"]
    counted = table_rows(text, "chapter")[:2]
    assert counted == [["Knowledge entropy", "1", "1", "0", "1", "0", "3"], ["Regime", "0", "0", "1", "0", "1", "2"]]
    # every claim once, its badge coloured by its verdict word and linked to its figure (else the summary, else
    # the chapter)
    rows = table_rows(text, "figure") + table_rows(text.split("## Regime", 1)[1], "figure")
    assert text.index("## Knowledge entropy\n") < text.index("## Regime\n")
    claims = [c for chapter in ("entropy", "regime") for c in data[chapter]["claims"]]
    assert [(r[0], r[1]) for r in rows] == [(c["figure"], c["statement"]) for c in claims]
    hrefs = [re.search(r'href="([^"]+)"', r[4]).group(1) for r in rows]
    assert hrefs == ["entropy.html#entropy-fig-2", "entropy.html#entropy-fig-3", "entropy.html#entropy-summary",
                     "regime.html", "regime.html"]
    classes = [re.search(r'class="verdict verdict-([a-z-]+)"', r[4]).group(1) for r in rows]
    assert classes == ["disagrees", "agrees", "partly", "not-significant", "selected"]
    assert ">disagrees (2 of 3 seeds)</a>" in rows[0][4]
    # the interval in its short form, the range in a tooltip
    assert rows[3][3] == 'drop <span class="detail" title="sd over 3 seeds; range -0.195 … -0.084">-0.157 ± 0.063' \
        '</span> nats'


def test_glance_without_validity_and_the_readme_block_come_from_the_same_function():
    data = fixture_summary(validity=False)
    book, readme = S.glance(data, book=True), S.render(data)
    assert "model system" not in book.split("| chapter |")[0] and "The model system" not in readme
    assert table_rows(book, "chapter")[:2] == table_rows(readme, "chapter")[:2]
    assert "<" not in readme.split("- **")[0]   # no HTML badges in the README
    assert "- **Knowledge entropy** (1 disagrees, 1 agrees, 1 partly of 3 checked claims). It rose." in readme
    assert S.glance({}) == "No chapter has recorded its claims yet."
    with_validity = S.render(fixture_summary())
    assert with_validity.startswith("**The model system** (OLMo mini (1B role), seeds 0, 1, 2):")


def test_short_form_keeps_the_value_and_moves_the_detail():
    assert S.short(SPREAD_TEXT, html=False) == "drop -0.157 ± 0.063 nats"
    trend = "seed 0: increases (Spearman ρ = +0.92, one-sided p = 0.00025, n = 9)"
    assert S.short(trend, html=False) == "seed 0: increases (ρ = +0.92)"
    assert S.short(trend) == ('seed 0: increases (<span class="detail" title="one-sided p = 0.00025, n = 9">'
                              'ρ = +0.92</span>)')
    assert S.short("A -9.6 → 43.5") == "A -9.6 → 43.5"


def test_fill_writes_the_glance_at_the_markers_with_the_pages_labels(tmp_path):
    notebook = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["(entropy-fig-3)=\n", "## Figure 3"]},
                          {"cell_type": "code", "metadata": {}, "source": "(entropy-fig-2)=", "outputs": []}]}
    (tmp_path / "entropy.ipynb").write_text(json.dumps(notebook))
    (tmp_path / "intro.md").write_text(f"# Intro\n\n{S.COUNTS}\n\nmore\n")
    (tmp_path / "results.md").write_text(f"# Results\n\n(results-top)=\n{S.GLANCE}\n")
    assert S.labels(tmp_path) == {"entropy-fig-3", "results-top"}   # code cells hold no labels
    data = fixture_summary()
    for page in ("intro.md", "results.md"):
        S.fill(tmp_path / page, data)
    intro, results = (tmp_path / "intro.md").read_text(), (tmp_path / "results.md").read_text()
    assert intro == f"# Intro\n\n{S.glance(data, book=True, rows=False)}\n\nmore\n"
    assert "| figure |" not in intro
    assert results.endswith(S.glance(data, book=True, anchors={"entropy-fig-3", "results-top"}) + "\n")
    assert 'href="entropy.html#entropy-fig-3"' in results and 'href="entropy.html#entropy-fig-2"' not in results


def test_the_list_of_figures_names_each_labelled_figure_with_its_verdicts(tmp_path):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["(entropy-fig-2)=\n", "## Figure 2: entropy $H$\n"]},
             {"cell_type": "markdown", "metadata": {}, "source": ["(entropy-summary)=\n", "## Summary"]},
             {"cell_type": "markdown", "metadata": {}, "source": ["(entropy-fig-9)=\n## Figure 9: ReLU"]}]
    (tmp_path / "entropy.ipynb").write_text(json.dumps({"cells": cells}))
    (tmp_path / "appendix.md").write_text(f"# Appendix\n\n{S.FIGURES}\n")
    S.fill(tmp_path / "appendix.md", fixture_summary())
    rows = table_rows((tmp_path / "appendix.md").read_text(), "figure")
    assert [r[0] for r in rows] == ['<a href="entropy.html#entropy-fig-2">Figure 2: entropy H</a>',
                                    '<a href="entropy.html#entropy-fig-9">Figure 9: ReLU</a>']
    assert rows[0][2] == S.badge("disagrees (2 of 3 seeds)", "disagrees", "entropy.html#entropy-fig-2")   # the Fig. 2 claim
    assert rows[1][2] == "no claim checked" and rows[0][1] == "Knowledge entropy"
