"""Is the miniature a valid instrument for the paper's causal claims? The criteria, written down before any pilot
of the model system ran (parameters/pilots/base.yaml states them and the choice rule), and the numbers that judge
them, computed from a plan's cached items by the same code for the pilots and for the book.

Sections 4 and 5 of the paper are about what follows from a knowledge-entropy decay (acquisition falls, forgetting
rises, raising the entropy helps), so the model system must know its world, acquire what it is shown and decay;
that it decays is then a property it was chosen for ("selected"), never a reproduction of Fig. 2.
"""
from __future__ import annotations

import statistics

from ..entropy import entropy_change, load_per_document
from .execute import execute
from .items import Plan
from .plan import past_initial_stage

MIN_ACCURACY = 0.60    # criterion (a); chance is 1 / task_choices (25%)
CRITERIA = {
    "a": "it knows its world: mean accuracy over the seeds on the world's six fact tasks at the final checkpoint "
         f">= {MIN_ACCURACY:.0%} (chance 25%)",
    "b": "it acquires: the mean over the seeds of A on the paraphrased items is > 0 at every continual start",
    "c": "its knowledge entropy decays: from 20% of training to the end, in every seed, the 95% paired bootstrap "
         "interval of the change lies below 0",
    "d": "`make book` with it stays within 45 minutes cold on the 2-core machine",
}


# (d), projected as base.yaml says, from measured time: the default book with a 1B role at 50 tokens per parameter
# took 38 min 36 s for a cold `make book` in a fresh clone on an idle machine (45 min 49 s with niced tests beside
# it). Its 1B-role runs take ~102 s each (two run at once). While the regime cells inherited the 1B role's length,
# twice that length added ~12 min (about 50 min in all): 50 was the limit. Since the regime study has a centre of its
# own at 50 (regime.center, one run), the book grows with the 1B role's length only through its three runs and the
# other two roles' (their paper ratios to it): ~3.3 min per 50 tokens per parameter, plus ~1.4 min for the centre:
# ~43 min at 100, ~47 at 150. This change of the book came after p4-p6 ran, to bring p5 (b, c) within budget; it is
# a change of cost, not of any measured criterion. Measured on that book: 36 min 39 s cold (README, Measured; the
# entropy measurements were batched by document length in the same commit, 14 -> 8 min).
BUDGET_TOKENS_PER_PARAMETER = 100


def within_budget(row: dict) -> bool:
    """Criterion (d), projected for a pilot family's row of book/pilots.json."""
    return row["tokens_per_parameter"] <= BUDGET_TOKENS_PER_PARAMETER


def world_accuracy(plan: Plan, model: str, seed: int) -> float:
    """Mean accuracy (a fraction) over the world's fact tasks at the model's last analysed checkpoint (the fact
    check records percentages)."""
    last = plan.checkpoints[(model, seed)][-1]
    record = execute(plan.lookup("facts", last.tag))
    return sum(record["accuracy"].values()) / len(record["accuracy"]) / 100


def acquisition(plan: Plan, model: str, seed: int) -> dict[float, dict]:
    """A and A on the paraphrased items (%) of the baseline run from every continual start, keyed by the start's
    fraction of the schedule."""
    out = {}
    for step in plan.starts.get(model, []):
        result = execute(plan.run(model, step, seed=seed))
        out[round(step / plan.final_steps[model], 4)] = {"step": step, "A": result["A"], "A_para": result["A_para"]}
    return out


def decay_window(plan: Plan, model: str, seed: int):
    """The checkpoints the change is taken between: the first analysed one from 20% of the schedule on (the regime
    chapter's window), and the last."""
    refs = plan.checkpoints[(model, seed)]
    final = plan.final_steps[model]
    return next(r for r in refs if past_initial_stage(r.step / final)), refs[-1]


def knowledge_entropy_change(plan: Plan, model: str, seed: int, draws: int = 1000) -> dict:
    """Knowledge entropy at the end minus at 20% of training (nats; negative: a decay), with its paired bootstrap
    interval over the documents of the Dolma-role sample (needs per-document coefficients: entropy.bootstrap > 0,
    or the model being the regime study's base)."""
    start, end = decay_window(plan, model, seed)
    a, b = (plan.measurement(ref, "dolma") for ref in (start, end))
    measured = execute(b)["knowledge_entropy"] - execute(a)["knowledge_entropy"]
    change = entropy_change(load_per_document(a.out_dir), load_per_document(b.out_dir), measured, draws)
    return {**change, "from_step": start.step, "to_step": end.step}


def model_validity(plan: Plan, model: str) -> dict:
    """The validity numbers of one model over its seeds, and which criteria (a)-(c) they meet."""
    seeds = plan.seeds(model)
    accuracy = {seed: world_accuracy(plan, model, seed) for seed in seeds}
    acquired = {seed: acquisition(plan, model, seed) for seed in seeds}
    changes = {seed: knowledge_entropy_change(plan, model, seed) for seed in seeds}
    starts = sorted(set.intersection(*(set(a) for a in acquired.values())))
    mean_a = {f: statistics.fmean(acquired[s][f]["A"] for s in seeds) for f in starts}
    mean_para = {f: statistics.fmean(acquired[s][f]["A_para"] for s in seeds) for f in starts}
    chance = plan.fact_checks[0].chance if plan.fact_checks else None
    return {"model": plan.labels[model], "seeds": seeds,
            "world_accuracy": statistics.fmean(accuracy.values()), "world_accuracy_by_seed": accuracy,
            "chance": chance,
            "acquisition_by_start": mean_a, "acquisition_para_by_start": mean_para,
            "acquisition_by_seed": {s: {f: v["A"] for f, v in a.items()} for s, a in acquired.items()},
            "entropy_change_from_20pct": {s: c["change"] for s, c in changes.items()},
            "entropy_change_ci": {s: c["interval"] for s, c in changes.items()},
            "entropy_window": {s: [c["from_step"], c["to_step"]] for s, c in changes.items()},
            "criteria": {"a": statistics.fmean(accuracy.values()) >= MIN_ACCURACY,
                         "b": bool(starts) and all(v > 0 for v in mean_para.values()),
                         "c": all(c["interval"][1] < 0 for c in changes.values())}}
