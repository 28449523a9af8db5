"""Chapter "Where does knowledge entropy decay?" (beyond the paper): the regime of every model in two dimensionless
numbers, and the regime study's runs read back as curves, drops with intervals, per-layer views and verdicts.

Two numbers place a pretraining run (or a checkpoint of it): tokens per non-embedding parameter, and the
weight-decay e-folds S = sum over updates of lr_t x weight_decay (ke.train.regime). The study changes one factor
of the base model at a time (ke.book.items: RegimeCell) and asks whether knowledge entropy still decays.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..models import CHECKPOINT_MARKER
from ..stats import spearman, spread
from ..train import Schedule, regime
from . import claims as C
from .chapter_entropy import maximum
from .execute import execute
from .items import CheckpointRef, Plan, RegimeCell
from .paper import FIG2_OLMO1B, PAPER_MODELS
from .plan import from_initial_stage

PAPER_DECAY = 100 * (FIG2_OLMO1B[0] - FIG2_OLMO1B[1]) / maximum({"num_layers": PAPER_MODELS["olmo-1b"].layers,
                                                "ffn_dim": PAPER_MODELS["olmo-1b"].ffn_dim})  # Fig. 2: ~0.28%


# ----------------------------------------------------------------------------------------------- regime numbers

def paper_regimes() -> list[dict]:
    """Tokens per non-embedding parameter and S of the paper's three models, from their published recipes."""
    out = []
    for role, m in PAPER_MODELS.items():
        schedule = Schedule(m.lr, m.steps, m.warmup_steps, m.lr_floor, m.warmup_start, m.lr_shape)
        r = regime(schedule, weight_decay=m.weight_decay, tokens_per_step=m.tokens_per_step,
                   non_embedding_params=m.non_embedding_params)
        out.append({"model": m.label, "role": role, "source": m.source, "lr": m.lr, "weight_decay": m.weight_decay,
                    "steps": m.steps, **r})
    return out


def checkpoint_info(ref: CheckpointRef) -> dict:
    """ke_checkpoint.json of a checkpoint trained here (step, loss, regime), or {} for one trained elsewhere."""
    path = Path(ref.source) / f"step{ref.step}" / CHECKPOINT_MARKER
    return json.loads(path.read_text()) if path.exists() else {}


def model_regimes(plan: Plan) -> list[dict]:
    """The regime of each model's final checkpoint: measured for models trained here, the paper's recipe else."""
    out, paper = [], {r["role"]: r for r in paper_regimes()}
    for model in plan.models:
        info = checkpoint_info(plan.checkpoints[(model, plan.seeds(model)[0])][-1])
        if info:
            out.append({"model": plan.labels[model], "role": plan.roles[model], **info["regime"], "loss": info["loss"]})
        else:
            out.append({**paper[plan.roles[model]], "model": plan.labels[model]})
    return out


def regime_table(plan: Plan) -> str:
    rows = [{**r, "model": f"{r['model']} (paper)"} for r in paper_regimes()] + model_regimes(plan)
    out = ("| model | plays | tokens | non-embedding parameters | tokens per parameter | weight-decay e-folds S |\n"
           "|---|---|---|---|---|---|\n")
    for r in rows:
        out += (f"| {r['model']} | {r['role']} | {r['tokens']:.3g} | {r['non_embedding_parameters']:.3g} | "
                f"{r['tokens_per_parameter']:.0f} | {r['weight_decay_efolds']:.2f} |\n")
    return out


# ----------------------------------------------------------------------------------------------- the study's runs

def run_rows(plan: Plan, refs: list[CheckpointRef]) -> list[dict]:
    """One row per checkpoint of a run: its regime, knowledge entropy with its bootstrap interval, the entropy
    without each document's first position, per-layer entropies and top-1% shares."""
    rows = []
    final = refs[-1].step
    for ref in refs:
        full = execute(plan.measurement(ref, "dolma"))
        first_out = execute(plan.measurement(ref, "dolma", "skip_first"))
        info = checkpoint_info(ref)
        highest = maximum(full)
        low, high = full["bootstrap"]["knowledge_entropy"]
        rows.append({"step": ref.step, "fraction": ref.step / final if final else 0.0,
                     "tokens_per_parameter": info["regime"]["tokens_per_parameter"],
                     "S": info["regime"]["weight_decay_efolds"], "loss": info.get("loss"),
                     "entropy": full["knowledge_entropy"], "low": low, "high": high, "maximum": highest,
                     "deficit": 100 * (highest - full["knowledge_entropy"]) / highest,
                     "entropy_skip_first": first_out["knowledge_entropy"],
                     "layer_deficit": [maximum(full, layers=1) - h for h in full["layer_entropy"]],
                     "layer_top1_share": full["layer_top1_share"], "num_docs": full["num_docs"],
                     "num_tokens": full["num_tokens"]})
    return rows


def cell_rows(plan: Plan, cell: RegimeCell) -> dict[int, list[dict]]:
    """run_rows of every seed of a cell."""
    return {seed: run_rows(plan, refs) for seed, refs in cell.runs.items()}


def decay(rows: list[dict], column: str = "entropy") -> dict:
    """How much `column` falls from 20% of the run to its end, against the noise of the measurement.

    drop: value at the checkpoint nearest 20% minus the final value (nats; positive = a decay), also in % of the
    maximum L ln m; noise: the bootstrap half-widths of the two ends combined in quadrature (documents resampled);
    trend: Spearman over the checkpoints from 20% on; verdict: "agrees" (a decay) when the one-sided trend test
    says decrease AND the drop exceeds twice the noise, "disagrees" when they say increase, else not significant."""
    kept = from_initial_stage(rows)
    start, end = kept[0], kept[-1]
    drop = start[column] - end[column]
    half = [(r["high"] - r["low"]) / 2 for r in (start, end)]
    noise = math.hypot(*half) if column == "entropy" else float("nan")
    t = spearman([r["step"] for r in kept], [r[column] for r in kept])
    if t.n >= 3 and t.p_down < C.ALPHA and not drop <= 2 * noise:
        verdict = C.AGREES
    elif t.n >= 3 and t.p_up < C.ALPHA and not -drop <= 2 * noise:
        verdict = C.DISAGREES
    else:
        verdict = C.NOT_SIGNIFICANT if t.n >= 3 else C.NOT_TESTED
    return {"drop": drop, "drop_percent": 100 * drop / end["maximum"], "noise": noise, "trend": t, "verdict": verdict,
            "from_step": start["step"], "to_step": end["step"], "max_so_far": max(r[column] for r in rows)}


def cell_summary(plan: Plan, cell: RegimeCell) -> dict:
    """A cell over its seeds: the decay per seed, the spread of the drop, and one verdict (claims.over_seeds)."""
    by_seed = cell_rows(plan, cell)
    decays = {seed: decay(rows) for seed, rows in by_seed.items()}
    first = decays[min(decays)]
    last = by_seed[min(by_seed)][-1]
    return {"sweep": cell.sweep, "cell": cell.cell, "seeds": len(decays), "rows": by_seed, "decays": decays,
            "drop": spread([d["drop"] for d in decays.values()]),
            "drop_percent": spread([d["drop_percent"] for d in decays.values()]),
            "noise": first["noise"], "verdict": C.over_seeds([d["verdict"] for d in decays.values()]),
            "tokens_per_parameter": last["tokens_per_parameter"], "S": last["S"], "loss": last["loss"],
            "tied": cell.config.tie_embeddings, "zoo": cell.zoo,
            "skip_first": decay(by_seed[min(by_seed)], "entropy_skip_first")}


def sweep_table(summaries: list[dict]) -> str:
    out = ("| cell | seeds | tokens / param | S | final loss | drop from 20% (nats) | drop (% of max) | noise floor "
           "(nats) | trend from 20% on (first seed) | decays? |\n|---|---|---|---|---|---|---|---|---|---|\n")
    for s in summaries:
        first = s["decays"][min(s["decays"])]
        out += (f"| {s['cell']} | {s['seeds']} | {s['tokens_per_parameter']:.0f} | {s['S']:.2f} | "
                f"{s['loss']:.3f} | {s['drop'].describe(3)} | {s['drop_percent'].describe(2)} | ±{2 * s['noise']:.3f} | "
                f"{first['trend'].describe()} | {C.emphasise(s['verdict'])} |\n")
    return out


def layer_table(summary: dict) -> str:
    """Per layer, at 20% of the run and at its end (first seed): ln m − H_l and the top-1% share."""
    rows = summary["rows"][min(summary["rows"])]
    start = from_initial_stage(rows)[0]
    end = rows[-1]
    out = "| layer | ln m − H_l at 20% | at the end | top-1% share at 20% (%) | at the end (%) |\n|---|---|---|---|---|\n"
    for l, (a, b, c, d) in enumerate(zip(start["layer_deficit"], end["layer_deficit"], start["layer_top1_share"],
                                         end["layer_top1_share"])):
        out += f"| {l} | {a:.4f} | {b:.4f} | {100 * c:.2f} | {100 * d:.2f} |\n"
    return out


def conclusion(summaries: dict[str, list[dict]]) -> str:
    """The chapter's closing statement, in plain words, from the verdicts: in which cells the decay appears, in
    which it does not, and which factor turns it on or off."""
    lines, switches = [], []

    def named(s):
        return f"{s['cell']} ({s['seeds']} seed{'s' if s['seeds'] > 1 else ''})"

    for sweep, cells in summaries.items():
        decays = [named(s) for s in cells if s["verdict"] == C.AGREES]
        rises = [named(s) for s in cells if s["verdict"].word is C.Word.DISAGREES]
        flat = [named(s) for s in cells if named(s) not in decays + rises]
        parts = []
        if decays:
            parts.append("decays in " + ", ".join(decays))
        if flat:
            parts.append("shows no significant decay in " + ", ".join(flat))
        if rises:
            parts.append("rises in " + ", ".join(rises))
        lines.append(f"- **{sweep}**: knowledge entropy " + "; ".join(parts) + ".")
        if decays and (flat or rises):
            switches.append(sweep)
    verdict = ("Changing " + " or ".join(f"**{s}**" for s in switches) + " alone turns a decay on or off within these "
               "sweeps (a cell with one seed is a lead, not a finding: parameters/regime.yaml runs every cell with "
               "three)." if switches else "No factor of these sweeps turns the decay on or off: in none of their cells "
               "does knowledge entropy decay from 20% of training on.")
    return "\n".join(lines) + "\n\n" + verdict


def facts(plan: Plan, summaries: dict[str, list[dict]], selected: bool = False) -> dict:
    """What the README quotes from this chapter (ke.book.summary)."""
    cells = [s for sweep in summaries.values() for s in sweep]
    base = next((s for s in cells if s["zoo"]), None)   # the zoo's 1B-role runs (the centre, or a cell equal to it)
    sentences = [conclusion(summaries).split("\n\n")[-1]] if summaries else []
    if base:
        sentences.insert(0, f"From 20% of training to the end, the 1B-role model ({base['tokens_per_parameter']:.0f} "
                            f"tokens per parameter, S = {base['S']:.1f}) loses {base['drop'].describe(3)} nats of "
                            f"knowledge entropy, {base['drop_percent'].describe(2)}% of its maximum (negative: a rise; "
                            f"the paper's OLMo-1B loses about {PAPER_DECAY:.2f}%): {base['verdict']}"
                            + (" (a property the model system was selected for)." if selected else "."))
    return {"title": "Where does knowledge entropy decay?", "sentences": sentences}


def cell_claims(summaries: dict[str, list[dict]], selected: bool = False) -> list[C.Claim]:
    """Each cell's decay verdict as a claim row (the paper's claim: the entropy decays along pretraining); the
    centre, which every sweep repeats, once. With a base model chosen for its decay (ModelSpec.selected), its runs
    and the centre (its configuration at another length) are "selected", never "agree"."""
    rows, base_seen = [], False
    for sweep, cells in summaries.items():
        for s in cells:
            if s["cell"] == "base" and base_seen:
                continue
            base_seen |= s["cell"] == "base"
            verdict = C.selected(s["verdict"], selected and (s["cell"] == "base" or s["zoo"]))
            rows.append(C.Claim(f"regime: {sweep}", s["cell"], "decays (Fig. 2)", f"drop {s['drop'].describe(3)} "
                                f"nats, noise floor ±{2 * s['noise']:.3f}", verdict))
    return rows
