"""The book's results in one file: each chapter records its verdicts and key numbers as it runs, the build
collects them into summary.json, and the README quotes that file (the block between its summary markers is
written from it), so the README and the book cannot disagree."""
from __future__ import annotations

import dataclasses
import json
import re
from html import escape
from pathlib import Path

from ..storage import write_json_atomically, write_text_atomically
from .claims import Claim, Word

START, END = "<!-- summary:start (written by `make book` from book/summary.json) -->", "<!-- summary:end -->"


def entry(claim: Claim) -> dict:
    """A claim as summary.json keeps it: its fields, the verdict as text, and the verdict's word beside it (read by
    the tables and badges, so the text is never parsed back)."""
    return {**dataclasses.asdict(claim), "word": claim.verdict.word.value}


def record(plan, chapter: str, claims: list[Claim], facts: dict | None = None) -> None:
    """Keep a chapter's verdicts and key numbers (called at the end of each chapter page)."""
    data = {"preset": plan.preset, "chapter": chapter, "claims": [entry(c) for c in claims], "facts": facts or {}}
    write_json_atomically(data, plan.run_dir / "summary" / f"{chapter}.json")


def collect(run_dir: Path, chapters: list[str]) -> dict:
    """The recorded chapters, in reading order, and the model system's validity (recorded by its page among its
    facts) as the top-level block "validity"."""
    out = {}
    for chapter in chapters:
        path = Path(run_dir) / "summary" / f"{chapter}.json"
        if path.exists():
            out[chapter] = json.loads(path.read_text())
    validity = out.get("model_system", {}).get("facts", {}).pop("validity", None)
    if validity:
        out["validity"] = validity
    return out


SPREAD = re.compile(r"(?P<value>[-+−]?[\d.]+ ± [\d.]+) \((?P<detail>sd over \d+ seeds; range [^)]*)\)")
SPEARMAN = re.compile(r"\(Spearman (?P<rho>ρ = [-+−]?[\d.]+), (?P<detail>one-sided p = [^,)]+, n = \d+)\)")


def chapters(summary: dict) -> dict:
    """The chapters of a summary (the other top-level blocks, such as "validity", are not chapters)."""
    return {name: data for name, data in summary.items() if isinstance(data, dict) and "claims" in data}


def counts(claims: list[dict]) -> str:
    tally = {}
    for c in claims:
        tally[c["word"]] = tally.get(c["word"], 0) + 1
    return ", ".join(f"{n} {w}" for w, n in sorted(tally.items(), key=lambda x: -x[1]))


def anchor(chapter: str, figure: str) -> str:
    """The label of the place that shows a claim: "continual", "Fig. 4" -> "continual-fig-4" (the chapters'
    Markdown carries these labels, `(continual-fig-4)=`, above the figure's heading)."""
    return f"{chapter}-" + re.sub(r"[^a-z0-9]+", "-", figure.lower()).strip("-")


def short(text: str, html: bool = True) -> str:
    """Numbers with their interval in one short form: "-0.157 ± 0.063 (sd over 3 seeds; range ...)" becomes
    "-0.157 ± 0.063" and a Spearman trend "ρ = +0.92"; the rest (range, p, n) goes into a tooltip (HTML) or is
    dropped (plain text)."""
    def tip(shown: str, detail: str) -> str:
        return f'<span class="detail" title="{escape(detail)}">{shown}</span>' if html else shown
    text = SPREAD.sub(lambda m: tip(m["value"], m["detail"]), text)
    return SPEARMAN.sub(lambda m: "(" + tip(m["rho"], m["detail"]) + ")", text)


def badge(text: str, word: str, href: str | None) -> str:
    """A verdict (its text, coloured by its word: book/_static/tables.css) as a badge that links to where the claim
    is shown."""
    css = "verdict verdict-" + word.replace(" ", "-")
    inner = escape(text)
    return f'<a class="{css}" href="{href}">{inner}</a>' if href else f'<span class="{css}">{inner}</span>'


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def validity_markdown(v: dict) -> str:
    """The model system's validity: world accuracy against chance, acquisition A > 0 at how many starts, the
    entropy change from 20% of training with its interval, and the selection criteria."""
    seeds = v.get("seeds", [])
    lines = [f"**The model system** ({v.get('model', '?')}, seeds {', '.join(map(str, seeds))}):"]
    if "world_accuracy" in v:
        per = v.get("world_accuracy_by_seed", {})
        detail = f" (seed {', seed '.join(f'{s}: {a:.1%}' for s, a in per.items())})" if per else ""
        lines.append(f"- answers {v['world_accuracy']:.1%} of its world's questions, chance {v.get('chance', 0.25):.0%}"
                     f"{detail};")
    for key, what in (("acquisition_by_start", "the injected facts"),
                      ("acquisition_para_by_start", "their paraphrases")):
        if v.get(key):
            by = v[key]
            positive = sum(a > 0 for a in by.values())
            lines.append(f"- acquisition A > 0 for {what} at {positive} of {len(by)} starts ("
                         + ", ".join(f"{float(s):.0%}: {a:+.1f}%" for s, a in by.items()) + ");")
    if v.get("entropy_change_from_20pct"):
        ci = v.get("entropy_change_ci", {})
        parts = [f"seed {s}: {d:+.3f}" + (f" [{ci[s][0]:+.3f}, {ci[s][1]:+.3f}]" if s in ci else "")
                 for s, d in v["entropy_change_from_20pct"].items()]
        lines.append("- knowledge entropy change from 20% of training to the end, nats (negative: decay; 95% "
                     "interval): " + "; ".join(parts) + ";")
    if v.get("criteria"):
        met = [k for k, ok in v["criteria"].items() if ok]
        unmet = [k for k, ok in v["criteria"].items() if not ok]
        lines.append(f"- selection criteria met: {', '.join(met) or 'none'}"
                     + (f"; not met: {', '.join(unmet)}" if unmet else "") + ".")
    return "\n".join(lines)


def counts_table(summary: dict, html: bool = False) -> str:
    """Verdicts per chapter: one row per chapter, one column per verdict word that occurs."""
    chaps = chapters(summary)
    tallies = {name: [c["word"] for c in data["claims"]] for name, data in chaps.items()}
    words = [w.value for w in Word if any(w.value in t for t in tallies.values())]
    head = [badge(w, w, None) if html else w for w in words]
    lines = ["| chapter | " + " | ".join(head) + " | claims |", "|---" * (len(words) + 2) + "|"]
    for name, data in chaps.items():
        lines.append(f"| {_cell(data['facts'].get('title', name))} | "
                     + " | ".join(str(tallies[name].count(w)) for w in words) + f" | {len(tallies[name])} |")
    return "\n".join(lines)


def claims_table(summary: dict, anchors: set[str] | None = None) -> str:
    """Every checked claim, one table per chapter under its title: figure, claim, the paper's number, ours, the
    verdict badge linking to the figure (its label when the chapter has it, else the chapter's summary, else the
    chapter's page)."""
    parts = []
    for name, data in chapters(summary).items():
        lines = [f"## {data['facts'].get('title', name)}", "", "| figure | claim | paper | ours | verdict |",
                 "|---|---|---|---|---|"]
        for c in data["claims"]:
            label = next((a for a in (anchor(name, c["figure"]), f"{name}-summary") if anchors and a in anchors),
                         None)
            href = f"{name}.html" + (f"#{label}" if label else "")
            lines.append(f"| {_cell(c['figure'])} | {_cell(c['statement'])} | {_cell(short(c['paper']))} | "
                         f"{_cell(short(c['ours']))} | {badge(c['verdict'], c['word'], href)} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def glance(summary: dict, book: bool = False, anchors: set[str] | None = None, rows: bool = True) -> str:
    """The results at a glance: the model system's validity (when recorded), the verdicts per chapter, then (with
    `rows`) in the book every claim with its badge, in the README each chapter's key sentences. The README's
    summary block and the book's glance page are both this function's output."""
    if not chapters(summary):
        return "No chapter has recorded its claims yet."
    parts = [validity_markdown(summary["validity"])] if summary.get("validity") else []
    parts.append(counts_table(summary, html=book))
    if not rows:
        pass
    elif book:
        parts.append(claims_table(summary, anchors))
    else:
        parts.append("\n".join(f"- **{data['facts'].get('title', name)}** ({counts(data['claims'])} of "
                               f"{len(data['claims'])} checked claims). " + " ".join(data["facts"].get("sentences", []))
                               for name, data in chapters(summary).items()))
    return "\n\n".join(parts)


GLANCE, COUNTS = "<!-- glance -->", "<!-- glance:counts -->"   # where the book's pages show the glance
LABEL = re.compile(r"^\(([^()\s]+)\)=\s*$", re.M)


def labels(folder: Path) -> set[str]:
    """The MyST labels, `(name)=`, of the pages in a folder (Markdown files and notebooks' Markdown cells)."""
    found = set()
    for page in Path(folder).iterdir():
        if page.suffix == ".md":
            found |= set(LABEL.findall(page.read_text()))
        elif page.suffix == ".ipynb":
            cells = json.loads(page.read_text())["cells"]
            found |= {m for c in cells if c["cell_type"] == "markdown" for m in LABEL.findall("".join(c["source"]))}
    return found


FIGURES = "<!-- figures -->"
SECTION = re.compile(r"^\((?P<label>[^()\s]+-fig-[^()\s]+)\)=\s*\n(?:\([^()\s]+\)=\s*\n)*## (?P<heading>.+)", re.M)


def figure_list(summary: dict, folder: Path) -> str:
    """Every figure of the chapters (their labelled "## Figure ..." sections), in reading order, with the verdicts
    of the claims it shows, each badge linking to the figure."""
    lines = ["| figure | chapter | verdicts |", "|---|---|---|"]
    for name, data in chapters(summary).items():
        page = Path(folder) / f"{name}.ipynb"
        if not page.exists():
            continue
        for cell in json.loads(page.read_text())["cells"]:
            found = SECTION.match("".join(cell["source"])) if cell["cell_type"] == "markdown" else None
            if not found:
                continue
            href = f"{name}.html#{found['label']}"
            shown = [c for c in data["claims"] if anchor(name, c["figure"]) == found["label"]]
            lines.append(f'| <a href="{href}">{escape(found["heading"].replace("$", ""))}</a> | '
                         f"{_cell(data['facts'].get('title', name))} | "
                         + (" ".join(badge(c["verdict"], c["word"], href) for c in shown) or "no claim checked") + " |")
    return "\n".join(lines) if len(lines) > 2 else "No chapter shows a figure yet."


def fill(page: Path, summary: dict) -> None:
    """Write the glance into a staged page at its markers (the full glance, or the validity and counts), and the
    list of figures at its marker."""
    text = page.read_text()
    if GLANCE in text or COUNTS in text or FIGURES in text:
        anchors = labels(page.parent)
        text = text.replace(GLANCE, glance(summary, book=True, anchors=anchors))
        text = text.replace(FIGURES, figure_list(summary, page.parent))
        page.write_text(text.replace(COUNTS, glance(summary, book=True, anchors=anchors, rows=False)))


def render(summary: dict) -> str:
    """The README's block."""
    return glance(summary, book=False)


def write(summary: dict, root: Path) -> None:
    """book/summary.json, and the README block between the markers rewritten from it."""
    write_json_atomically(summary, root / "book" / "summary.json")
    readme = root / "README.md"
    if readme.exists() and START in readme.read_text():
        text = readme.read_text()
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        write_text_atomically(f"{before}{START}\n{render(summary)}\n{END}{after}", readme)
