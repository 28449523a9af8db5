"""Page "How the model system was chosen": the validity criteria, the pilots' table (book/pilots.json, written by
`ke pilots`), the choice the rule makes, and the chosen system's validity on the book's own seeds."""
from __future__ import annotations

import json
from pathlib import Path

from . import claims as C
from .validity import CRITERIA, MIN_ACCURACY, within_budget

CHOICE_RULE = ("The families are ordered cheapest first (pretraining tokens; at equal tokens, the larger world, which "
               "changes less of the previous default); the model system is the first family that meets (a), (b) and "
               "(c) on both calibration seeds, and (d). If none does, the family that meets the most criteria (ties: "
               "the cheaper) is shown, and the book says that no configuration met them.")


def load_pilots(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {"criteria": CRITERIA, "families": {}}


def met(row: dict) -> list[str]:
    """The criteria a family meets: (a)-(c) measured on its calibration seeds, (d) projected (validity.within_budget)."""
    return [k for k, ok in row["criteria"].items() if ok] + (["d"] if within_budget(row) else [])


def cost(row: dict) -> tuple:
    """The rule's order: pretraining tokens, then the larger world (fewer changes to the previous default)."""
    return row["tokens"], -row.get("world_people", 0), row["file"]


def choose(pilots: dict) -> tuple[str | None, bool]:
    """(the chosen family, whether it meets (a)-(d)): the cheapest meeting all, else the one meeting most (ties: the
    cheaper)."""
    rows = sorted(pilots["families"].items(), key=lambda kv: cost(kv[1]))
    if not rows:
        return None, False
    valid = [k for k, r in rows if set("abcd") <= set(met(r))]
    if valid:
        return valid[0], True
    return max(rows, key=lambda kv: (len(met(kv[1])), -kv[1]["tokens"]))[0], False


def _seeds(values: dict, digits: int, unit: str = "") -> str:
    return " / ".join(f"{v:+.{digits}f}{unit}" if unit != "%" else f"{100 * v:.1f}%" for v in values.values())


def pilot_table(pilots: dict) -> str:
    """Two tables, one row per family in the rule's order: what each family is and costs, then what it met
    (numbers per calibration seed where they are per seed)."""
    rows = sorted(pilots["families"].items(), key=lambda kv: cost(kv[1]))
    out = ("| family | output matrix | S | tokens / param | window (passes) | people | final loss | "
           "wall min / run (loaded machine) |\n" + "|---" * 8 + "|\n")
    for key, r in rows:
        out += (f"| `{key}` | {'tied, not decayed' if r['tie_embeddings'] else 'untied, decayed'} | {r['S']:.2f} | "
                f"{r['tokens_per_parameter']:.0f} | {r['window_passes']:.2f} | {r.get('world_people', '—')} | "
                f"{r['final_loss']:.2f} | {sum(r['pretrain_seconds']) / len(r['pretrain_seconds']) / 60:.1f} |\n")
    out += ("\n| family | (a) world accuracy | (b) mean A on paraphrases by start (%) | (c) entropy change from 20% "
            "(nats), 95% interval | meets |\n" + "|---" * 5 + "|\n")
    for key, r in rows:
        change = "<br>".join(f"{c:+.3f} [{lo:+.3f}, {hi:+.3f}]" for c, (lo, hi) in
                             zip(r["entropy_change_from_20pct"].values(), r["entropy_change_ci"].values()))
        out += (f"| `{key}` | {_seeds(r['world_accuracy_by_seed'], 1, '%')} | "
                f"{', '.join(f'{v:+.1f}' for v in r['acquisition_para_by_start'].values())} | {change} | "
                f"{', '.join(met(r)) or '—'} |\n")
    return out


def choice_markdown(pilots: dict, preset, seeds: list[int]) -> str:
    """What the rule chose, and with which seeds the `preset` (the book's) trains it."""
    key, valid = choose(pilots)
    if key is None:
        return "*No pilot has been computed (`make pilots` writes book/pilots.json).*"
    row = pilots["families"][key]
    if valid:
        return (f"By the rule, the model system is **`{key}`** ({row['file']}): the cheapest family that meets (a), "
                f"(b) and (c) on both calibration seeds. The `{preset.name}` preset trains it with fresh seeds "
                f"({', '.join(map(str, seeds))}) on the book's world (seed {preset.world.seed if preset.world else '—'}), "
                "none of them used by a pilot.")
    text = (f"**No family meets (a), (b) and (c) on both calibration seeds, and (d).** The one meeting the most "
            f"criteria is `{key}` ({', '.join(met(row)) or 'none'}); the book is built on it, and every claim below "
            "that needs the unmet criteria is untested.")
    rivals = [k for k, r in pilots["families"].items() if k != key and len(met(r)) == len(met(row))]
    beyond = [k for k in rivals if not within_budget(pilots["families"][k])]
    if beyond:
        text += (" Tied with it, and more expensive: " + ", ".join(f"`{k}` ({', '.join(met(pilots['families'][k]))})"
                                                                   for k in beyond)
                 + f". (d) is projected from the default book's measured build (README, Measured); were it unmet at "
                 f"`{key}`'s length, the rule would choose `{beyond[0]}` instead.")
    return text


def validity_claims(v: dict) -> list[C.Claim]:
    """The three properties the model system was chosen for, on the book's seeds: "selected" when they hold there
    too (never "agrees": they were selected for), "disagrees" when a selected property fails on fresh seeds."""
    changes = "; ".join(f"seed {s}: {c:+.3f} [{lo:+.3f}, {hi:+.3f}]" for (s, c), (lo, hi) in
                        zip(v["entropy_change_from_20pct"].items(), v["entropy_change_ci"].values()))
    para = ", ".join(f"{100 * float(f):.0f}%: {a:+.1f}" for f, a in v["acquisition_para_by_start"].items())
    rows = [("(a) knows its world", f">= {MIN_ACCURACY:.0%} of the world's questions", f"{100 * v['world_accuracy']:.1f}% "
             f"(chance {100 * v['chance']:.0f}%)", v["criteria"]["a"]),
            ("(b) acquires what it is shown", "mean A on paraphrases > 0 at every start", para, v["criteria"]["b"]),
            ("(c) knowledge entropy decays from 20% of training", "interval of the change below 0 in every seed",
             changes, v["criteria"]["c"])]
    return [C.Claim("model system", name, wanted, ours, C.SELECTED if ok else C.DISAGREES)
            for name, wanted, ours, ok in rows]


def validity_sentences(v: dict) -> list[str]:
    """What the README says of the model system beside its validity block (ke.book.summary), without repeating it."""
    unmet = [k for k, ok in v["criteria"].items() if not ok]
    return [f"Its numbers are the block above; criteria {', '.join(unmet) + ' not met' if unmet else 'all met'}. "
            "The properties it meets were selected for on calibration seeds (page 'How the model system was "
            "chosen'), not results."]


def family_notes(pilots: dict, root: Path) -> str:
    """Why each family was tried (its file's opening comment), and the families defined but not run."""
    out = "".join(f"- `{key}`: {row['description']}\n" for key, row in pilots["families"].items())
    unrun = sorted(p.stem for p in (Path(root) / "parameters" / "pilots").glob("p*.yaml")
                   if p.stem not in pilots["families"])
    if unrun:
        out += (f"\nDefined but not run: {', '.join(f'`{k}`' for k in unrun)} (more pretraining tokens than the "
                "families above; the rule reaches them only if no cheaper family qualifies).")
    return out
