"""The paper's claims as code: every verdict the book prints comes from here, in one vocabulary.

- "agrees": the claimed direction holds (a directional trend: one-sided Spearman test at alpha = 0.05, exact for
  n <= 8; a comparison: it holds);
- "disagrees": the opposite direction holds by the same test (or the comparison fails);
- "not significant": a trend whose direction neither test establishes;
- "partly (k of n)": a claim made of n checks, k of which hold (or a verdict that holds for k of n seeds);
- "selected": a property the model system was chosen for on calibration seeds (it knows its world, acquires, its
  knowledge entropy decays), holding on the book's seeds too: never "agrees", since it was not tested but selected.
A verdict over several seeds is "agrees" only if it agrees for every seed (`over_seeds`).

The rules were fixed before the results were looked at; the tests check that the paper's own numbers satisfy the
paper's claims and that a reversed series fails them.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..stats import Trend, spearman

ALPHA = 0.05


class Word(str, Enum):
    """The vocabulary above, in the order of the columns of the book's verdict counts (summary.counts_table)."""
    AGREES = "agrees"
    PARTLY = "partly"
    NOT_SIGNIFICANT = "not significant"
    DISAGREES = "disagrees"
    SELECTED = "selected"
    NOT_TESTED = "not tested"


class Verdict(str):
    """A verdict as data: its word and, for a split verdict, its count ("4 of 6", "2 of 3 seeds"). It is the str of
    its text ("partly (4 of 6)"), so it prints and serialises as before; code reads `.word`, never the text."""
    word: Word
    count: str

    def __new__(cls, word: Word, count: str = ""):
        self = super().__new__(cls, f"{word.value} ({count})" if count else word.value)
        self.word, self.count = Word(word), count
        return self

    def __getnewargs__(self):          # copies (dataclasses.asdict deep-copies fields) rebuild it from its parts
        return self.word, self.count


AGREES, DISAGREES = Verdict(Word.AGREES), Verdict(Word.DISAGREES)
NOT_SIGNIFICANT, NOT_TESTED, SELECTED = Verdict(Word.NOT_SIGNIFICANT), Verdict(Word.NOT_TESTED), Verdict(Word.SELECTED)


@dataclass(frozen=True)
class Claim:
    """One row of a chapter's summary: what the paper claims, what it reports, what we measured, the verdict."""
    figure: str
    statement: str
    paper: str
    ours: str
    verdict: Verdict


def trend(t: Trend, expected: int) -> Verdict:
    """Verdict on a claimed monotone trend: expected = -1 (decreases) or +1 (increases)."""
    if t.n < 3:
        return NOT_TESTED
    claimed, opposite = (t.p_down, t.p_up) if expected < 0 else (t.p_up, t.p_down)
    if claimed < ALPHA:
        return AGREES
    if opposite < ALPHA:
        return DISAGREES
    return NOT_SIGNIFICANT


def trend_of(x, y, expected: int) -> tuple[Verdict, Trend]:
    """The verdict and the Spearman trend of y against x."""
    t = spearman(x, y)
    return trend(t, expected), t


def checks(flags) -> Verdict:
    """Verdict on a claim made of several yes/no checks (None = not measurable, left out)."""
    flags = [bool(f) for f in flags if f is not None]
    if not flags:
        return NOT_TESTED
    if all(flags):
        return AGREES
    return Verdict(Word.PARTLY, f"{sum(flags)} of {len(flags)}") if any(flags) else DISAGREES


def over_seeds(verdicts: list[Verdict]) -> Verdict:
    """One verdict from the same claim judged on each seed: unanimous verdicts stand; otherwise the share of seeds
    that agree ("partly (k of n seeds)"), or, when none agrees, "disagrees (k of n seeds)" if most seeds disagree,
    else "not significant"."""
    verdicts = [v for v in verdicts if v != NOT_TESTED]
    if not verdicts:
        return NOT_TESTED
    if len(set(verdicts)) == 1:
        return verdicts[0]
    agreeing, disagreeing, n = sum(v == AGREES for v in verdicts), sum(v == DISAGREES for v in verdicts), len(verdicts)
    if agreeing:
        return Verdict(Word.PARTLY, f"{agreeing} of {n} seeds")
    return Verdict(Word.DISAGREES, f"{disagreeing} of {n} seeds") if disagreeing > n / 2 else NOT_SIGNIFICANT


def selected(verdict: Verdict, chosen: bool) -> Verdict:
    """A verdict on a property the model system was chosen for: "selected" where it would agree, else unchanged."""
    return SELECTED if chosen and verdict == AGREES else verdict


def markdown(claims: list[Claim], with_figure: bool = True) -> str:
    """The summary table of a chapter, with a count of verdicts."""
    head = "| figure | claim | paper | ours | verdict |\n|---|---|---|---|---|\n" if with_figure else \
        "| claim | paper | ours | verdict |\n|---|---|---|---|\n"
    rows = "".join((f"| {c.figure} " if with_figure else "") + f"| {c.statement} | {c.paper} | {c.ours} | "
                   f"{emphasise(c.verdict)} |\n" for c in claims)
    counts = {}
    for c in claims:
        counts[c.verdict.word] = counts.get(c.verdict.word, 0) + 1
    return head + rows + "\n" + ", ".join(f"{word.value}: {n}" for word, n in counts.items()) + "."


def emphasise(verdict: Verdict) -> str:
    return f"**{verdict}**" if verdict.word is Word.DISAGREES else verdict
