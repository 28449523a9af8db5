"""Chapter "Knowledge entropy along pretraining" (paper Section 3, App. A.2-A.4): the numbers the page shows,
read from the per-checkpoint artifacts of the plan (one artifact per checkpoint, then aggregate)."""
from __future__ import annotations

import dataclasses
import json
import math

from ..entropy import load_coefficients
from . import claims as C
from .execute import execute
from .items import Plan
from .paper import FIGURES
from .plan import from_initial_stage


def rows(plan: Plan, model: str, seed: int | None = None) -> list[dict]:
    """One row per analysed checkpoint: step, fraction of the schedule, knowledge entropy on every corpus and
    variant (`entropy_<role>`), attention / next-token / ReLU-variant entropy and the per-layer entropies."""
    seed = plan.seeds(model)[0] if seed is None else seed
    out = []
    for ref in plan.checkpoints[(model, seed)]:
        records = {m.corpus: execute(m) for m in plan.measurements if m.checkpoint == ref}
        dolma = records["dolma"]
        row = {"step": ref.step, "seed": seed, "fraction": ref.step / plan.final_steps[model],
               "layer_entropy": dolma["layer_entropy"], "attention_entropy": dolma.get("attention_entropy"),
               "layer_attention_entropy": dolma.get("layer_attention_entropy"), "ntp_entropy": dolma.get("ntp_entropy"),
               "relu_entropy": dolma.get("relu_knowledge_entropy"), "num_layers": dolma["num_layers"],
               "ffn_dim": dolma["ffn_dim"], "num_tokens": dolma["num_tokens"], "num_docs": dolma["num_docs"]}
        row.update({f"entropy_{role}": record["knowledge_entropy"] for role, record in records.items()})
        out.append(row)
    return out


def maximum(row: dict, layers: int | None = None) -> float:
    """The largest possible knowledge entropy of `layers` layers (default: all of the row's): L ln m (every slot
    equally used); `row` (a row, a measurement record) has num_layers and ffn_dim."""
    return (row["num_layers"] if layers is None else layers) * math.log(row["ffn_dim"])


def role_markdown(plan: Plan) -> str:
    """One sentence when the preset has no OLMo-1B role, whose runs most of the paper's figures show."""
    if "olmo-1b" in plan.roles.values():
        return ""
    return (f"*Preset {plan.preset} has no OLMo-1B role: {plan.labels[plan.primary]} stands in for it wherever "
            "the paper shows OLMo-1B.*\n\n")


def coefficients(plan: Plan, model: str, step: int, seed: int | None = None):
    """C-bar [layers, ffn_dim] of one checkpoint on the Dolma role."""
    return load_coefficients(plan.measurement(plan.checkpoint(model, step, seed)).out_dir)


def world_knowledge(plan: Plan, model: str, seed: int | None = None) -> list[dict]:
    """Accuracy on the generated world's fact tasks at every analysed checkpoint (empty without a world)."""
    seed = plan.seeds(model)[0] if seed is None else seed
    return [execute(f) for f in plan.fact_checks if f.checkpoint.model == model and f.checkpoint.seed == seed]


def mean_accuracy(record: dict) -> float:
    return sum(record["accuracy"].values()) / len(record["accuracy"])


def train_log(plan: Plan, model: str, seed: int | None = None) -> list[dict]:
    """Per-step loss and learning rate of a zoo model (empty for models trained elsewhere)."""
    seed = plan.seeds(model)[0] if seed is None else seed
    run = next((r for r in plan.pretraining if r.model == model and r.seed == seed), None)
    path = run.out_dir / "train_log.jsonl" if run else None
    return [json.loads(line) for line in path.read_text().splitlines()] if path and path.exists() else []


def trend_claim(figure: str, series: str, rows_: list[dict], column: str, expected: int = -1,
                paper: str = "decreases") -> C.Claim:
    """A claimed monotone trend of `column` along training, judged from 20% of the schedule on."""
    kept = from_initial_stage(rows_)
    verdict, t = C.trend_of([r["step"] for r in kept], [r[column] for r in kept], expected)
    return C.Claim(figure, f"{series}: {column.replace('_', ' ')} {paper}", paper, t.describe(), verdict)


def seed_trend_claim(figure: str, series: str, by_seed: dict[int, list[dict]], column: str,
                     expected: int = -1, paper: str = "decreases") -> C.Claim:
    """trend_claim judged on every seed; "agrees" only if it agrees for each (claims.over_seeds)."""
    per_seed = [trend_claim(figure, series, r, column, expected, paper) for r in by_seed.values()]
    ours = "; ".join(f"seed {seed}: {c.ours}" for seed, c in zip(by_seed, per_seed))
    return C.Claim(figure, per_seed[0].statement, paper, ours, C.over_seeds([c.verdict for c in per_seed]))


def figure2_claim(plan: Plan, preset, model: str) -> C.Claim:
    """Fig. 2's knowledge-entropy trend of one model over its seeds. A model chosen for its decay (ModelSpec.selected)
    cannot test the claim: an agreeing verdict is reported as "selected"."""
    claim = seed_trend_claim("Fig. 2", plan.labels[model], {s: rows(plan, model, s) for s in plan.seeds(model)},
                             "entropy_dolma")
    return dataclasses.replace(claim, verdict=C.selected(claim.verdict, preset.models[model].selected))


def selection_note(preset, models: list[str]) -> str:
    chosen = [preset.models[k].label for k in models if preset.models[k].selected]
    if not chosen:
        return ""
    return (f"\n\n*{', '.join(chosen)} was chosen, among pilot configurations on calibration seeds, for a knowledge "
            "entropy that decays from 20% of training on (page 'How the model system was chosen'), so its panel "
            "shows a selected property, not a test of the paper's Figure 2: that rests on the paper's own OLMo numbers "
            "and on the regime chapter's map. Its verdict is therefore 'selected' when the decay holds on the book's "
            "seeds.*")


def layer_changes(rows_: list[dict], stages: dict[str, int]) -> dict:
    """Fig. 8: per layer, entropy at the initial stage minus at the final stage."""
    by_step = {r["step"]: r for r in rows_}
    first, last = by_step[stages["initial"]]["layer_entropy"], by_step[stages["final"]]["layer_entropy"]
    drops = [a - b for a, b in zip(first, last)]
    largest = max(range(len(drops)), key=lambda i: drops[i])
    return {"drops": drops, "decreasing": sum(d > 0 for d in drops), "largest": largest}


def layer_claim(label: str, changes: dict) -> C.Claim:
    drops, largest = changes["drops"], changes["largest"]
    ours = (f"{changes['decreasing']} of {len(drops)} layers lose entropy from the initial to the final stage; "
            f"the largest drop ({drops[largest]:.4f} nats) is in layer {largest} of 0..{len(drops) - 1}")
    verdict = C.checks([d > 0 for d in drops] + [largest == len(drops) - 1])
    return C.Claim("Fig. 8", f"{label}: every layer loses entropy, the last layer most", FIGURES["fig8"], ours, verdict)


def trend_table(rows_by_model: dict[str, list[dict]], labels: dict[str, str], column: str = "entropy_dolma") -> str:
    """Fig. 2's table: first, last and maximum entropy, trends over all checkpoints and from 20% on."""
    from ..stats import spearman

    out = ("| model | checkpoints | first | last | maximum L ln m | trend, all checkpoints | trend from 20% on |\n"
           "|---|---|---|---|---|---|---|\n")
    for key, r in rows_by_model.items():
        every, kept = spearman([x["step"] for x in r], [x[column] for x in r]), from_initial_stage(r)
        late = spearman([x["step"] for x in kept], [x[column] for x in kept])
        out += (f"| {labels[key]} | {len(r)} | {r[0][column]:.4f} | {r[-1][column]:.4f} | {maximum(r[0]):.3f} | "
                f"{every.describe()} | {late.describe()} |\n")
    return out


def padding_table(rows_: list[dict]) -> str:
    out = "| step | Eq. 2 (padding excluded) | official (padding counted) | difference |\n|---|---|---|---|\n"
    for x in rows_:
        out += (f"| {x['step']} | {x['entropy_dolma']:.4f} | {x['entropy_dolma_count_padding']:.4f} | "
                f"{x['entropy_dolma_count_padding'] - x['entropy_dolma']:+.4f} |\n")
    return out


def facts(plan: Plan, rows_by_model: dict[str, list[dict]], claims: list[C.Claim]) -> dict:
    """What the README quotes from this chapter (ke.book.summary)."""
    primary = plan.primary
    fig2 = next((c for c in claims if c.figure == "Fig. 2" and plan.labels[primary] in c.statement), None)
    sentences = []
    knowledge = world_knowledge(plan, primary)
    if knowledge:
        sentences.append(validity_sentence(knowledge[-1], plan.labels[primary]))
    r = rows_by_model[primary]
    if fig2:
        sentences.append(f"Its knowledge entropy goes from {r[0]['entropy_dolma']:.3f} nats at initialisation to "
                         f"{r[-1]['entropy_dolma']:.3f} at the end (maximum {maximum(r[0]):.3f}); from 20% of "
                         f"training on: {fig2.ours} — " + ("selected (the model system was chosen for it; not a test "
                                                           "of Fig. 2)." if fig2.verdict == C.SELECTED else
                                                           f"{fig2.verdict} with the paper's Fig. 2."))
    return {"title": "Knowledge entropy along pretraining", "sentences": sentences}


def validity_sentence(record: dict, label: str) -> str:
    """Does the final checkpoint know its world? Its mean accuracy against chance, with a one-sided binomial test
    over all questions, and "well above chance" only at twice chance or more (a model that barely beats chance has
    little to forget, so F compares near-chance accuracies)."""
    from scipy import stats
    accuracy, chance = mean_accuracy(record), 100 * record["chance"]
    n = record.get("questions", 0)
    test = (f"; binomial p = {stats.binomtest(round(accuracy * n / 100), n, chance / 100, 'greater').pvalue:.2g} "
            f"over {n} questions" if n else "")
    if accuracy >= 2 * chance:
        verdict = "well above chance: it knows much of its world"
    elif accuracy > chance:
        verdict = ("above chance but far from knowing its world: forgetting F compares accuracies close to chance, "
                   "and the chapters' F values mean little")
    else:
        verdict = "**at chance: it has not learned its world, and F means nothing**"
    return f"The final {label} answers {accuracy:.1f}% (chance {chance:.0f}%{test}): {verdict}."
