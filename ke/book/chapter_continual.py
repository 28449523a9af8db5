"""Chapter "Continual knowledge learning" (paper Section 4, App. B): the numbers, tables and verdicts the page
shows, read from the plan's continual-learning runs."""
from __future__ import annotations

import json
import math

import numpy as np

from ..stats import correlation
from . import claims as C
from . import paper
from .chapter_entropy import role_markdown, rows as entropy_rows
from .execute import execute
from .items import ContinualRun, Plan, RunId

KINDS = ("memorization", "semantic", "composition")


def result_row(run: ContinualRun, result: dict, final: int) -> dict:
    """One run's result flattened: A, F (%), K and P before (PT) and after (CL), per set."""
    pt, cl = result["curve"][0], result["curve"][-1]
    step = run.checkpoint.step
    return {"step": step, "seed": run.checkpoint.seed, "fraction": step / final, "A": result["A"], "F": result["F"],
            "A_para": result["A_para"], "A_once": result["A_once"], "K_PT": result["K_PT"], "K_CL": result["K_CL"],
            "P_PT": result["P_PT"], "P_CL": result["P_CL"], "K_para_PT": pt["K_para"], "K_para_CL": cl["K_para"],
            "K_once_PT": pt["K_once"], "K_once_CL": cl["K_once"],
            "items_cut": result.get("provenance", {}).get("items_longer_than_seq_len")}


def curve(plan: Plan, model: str, *, seed: int | None = None, setting: str = "baseline", corpus: str = "pubmed",
          steps: list[int] | None = None) -> list[dict]:
    """result_row per starting checkpoint of `model` (default: its continual starts), by step."""
    steps = plan.starts.get(model, []) if steps is None else steps
    out = []
    for step in sorted(steps):
        run = plan.run(model, step, seed=seed, setting=setting, corpus=corpus)
        out.append(result_row(run, execute(run), plan.final_steps[model]))
    return out


def curves_by_seed(plan: Plan, model: str, **kwargs) -> dict[int, list[dict]]:
    """curve() for every seed that has continual runs."""
    return {seed: curve(plan, model, seed=seed, **kwargs) for seed in plan.seeds(model)
            if all(("continual", plan.checkpoint(model, s, seed).tag, RunId("baseline", "pubmed")) in plan._index
                   for s in plan.starts.get(model, []))}


def table(plan: Plan, setting: str, corpus: str = "pubmed") -> list[dict]:
    """The rows of Tables 1-2 for one setting: the primary model at the table's starts (first seed)."""
    return curve(plan, plan.primary, setting=setting, corpus=corpus, steps=plan.table_starts)


def paper_table(setting: str) -> list[dict]:
    """The paper's Tables 1-2 row of `setting` (OLMo-1B) in table()'s row format."""
    final = paper.FINAL_STEP["OLMo-1B"]
    return [{"step": step, "fraction": step / final, "A": a, "F": f, "K_CL": k, "P_CL": p}
            for step, a, f, k, p in zip(paper.CHECKPOINTS_1B, paper.TABLE1_A[setting], paper.TABLE1_F[setting],
                                        paper.TABLE2_K[setting], paper.TABLE2_P[setting])]


def corpora(plan: Plan) -> list[str]:
    """The continual-learning corpora (roles) this preset runs."""
    return list(dict.fromkeys(r.corpus for r in plan.continual))


def missing_corpus_markdown(plan: Plan, corpus: str) -> str:
    """One sentence for a figure whose continual corpus the preset lacks."""
    return (f"*Preset {plan.preset} has no {corpus} continual corpus (`continual.corpora.{corpus}`), so this figure "
            "is not drawn.*")


def first_batch_loss(run: ContinualRun) -> float:
    return json.loads((run.out_dir / "train_log.jsonl").read_text().splitlines()[0])["loss"]


# ----------------------------------------------------------------------------------------------- claims

def start_trend_claim(figure: str, statement: str, rows: list[dict], column: str, expected: int,
                      paper_rows: list[dict] | None = None) -> C.Claim:
    """A claimed monotone trend of `column` with the starting step."""
    verdict, t = C.trend_of([r["step"] for r in rows], [r[column] for r in rows], expected)
    theirs = C.trend_of([r["step"] for r in paper_rows], [r[column] for r in paper_rows], expected)[1].describe() \
        if paper_rows else "see text"
    return C.Claim(figure, statement, theirs, t.describe(), verdict)


def seed_claim(figure: str, statement: str, by_seed: dict[int, list[dict]], column: str, expected: int,
               paper_rows: list[dict] | None = None) -> C.Claim:
    """start_trend_claim judged on every seed and combined (claims.over_seeds)."""
    per_seed = {s: start_trend_claim(figure, statement, r, column, expected, paper_rows) for s, r in by_seed.items()}
    first = next(iter(per_seed.values()))
    ours = "; ".join(f"seed {s}: {c.ours}" for s, c in per_seed.items()) if len(per_seed) > 1 else first.ours
    return C.Claim(figure, statement, first.paper, ours, C.over_seeds([c.verdict for c in per_seed.values()]))


def best_start(rows: list[dict], column: str) -> tuple[str, bool | None]:
    """Where the best end value of `column` comes from, and whether that is a middle start."""
    values = [r[column] for r in rows]
    if any(v is None for v in values):
        return "not measured", None
    i = int(np.argmax(values))
    where = "the earliest" if i == 0 else "the latest" if i == len(rows) - 1 else "a middle"
    return f"{where} start (step {rows[i]['step']}, {100 * rows[i]['fraction']:.0f}%)", 0 < i < len(rows) - 1


def mid_stage_claim(label: str, rows: list[dict], quantity: str) -> C.Claim | None:
    where, middle = best_start(rows, quantity + "_CL")
    if middle is None:
        return None
    paper_where, _ = best_start(paper_table("baseline"), quantity + "_CL")
    return C.Claim("Fig. 4", f"{label}: a mid-stage start gives the best end {quantity}", paper_where, where,
                   C.NOT_TESTED if len(rows) < 3 else C.checks([middle]))


def hyperparameter_claims(tables: dict[str, list[dict]]) -> list[C.Claim]:
    """App. B.4.2's claims about Tables 1-2 on `tables` (setting -> rows by start, as table() or paper_table()):
    a setting "lowers A" when its A is below the baseline's at the starts (claims.checks over the starts)."""
    checks = [("batch_x16", "A", -1, "larger batch → lower A"), ("batch_x16", "F", -1, "larger batch → milder F"),
              ("lr_x2.5", "A", -1, "higher lr → lower A"), ("lr_x2.5", "F", +1, "higher lr → more F"),
              ("epochs_3", "A", +1, "more epochs → higher A"), ("epochs_3", "F", +1, "more epochs → more F")]
    out, base = [], tables.get("baseline")
    for setting, column, sign, statement in checks:
        if not base or setting not in tables:
            continue
        pairs = [(r[column], b[column]) for r, b in zip(tables[setting], base)
                 if r[column] is not None and b[column] is not None]
        if pairs:
            mean = sum(x - y for x, y in pairs) / len(pairs)
            out.append(C.Claim("Tables 1–2", statement, "", f"mean difference {mean:+.2f} over {len(pairs)} starts",
                               C.checks([sign * (x - y) > 0 for x, y in pairs])))
    if base and "lr_div4" in tables and len(base) > 1:
        small = tables["lr_div4"][-1]["A"] - tables["lr_div4"][0]["A"]
        wide = base[-1]["A"] - base[0]["A"]
        out.append(C.Claim("Tables 1–2", "small lr → late models acquire better (A latest − A earliest above the "
                           "baseline's)", "", f"{small:+.2f} vs baseline {wide:+.2f}", C.checks([small > wide])))
    return out


def injection_set_claims(rows: list[dict]) -> list[C.Claim]:
    """Fig. 11: the once-set lags the paraphrase set in A, and is negative at the final start."""
    lags = [r["A_once"] < r["A_para"] for r in rows]
    return [C.Claim("Fig. 11", "Once lags Paraphrase in A", "at every start", f"at {sum(lags)} of {len(rows)} starts",
                    C.checks(lags)),
            C.Claim("Fig. 11", "Once acquisition is negative at the final stage", "yes (forgotten during CL)",
                    f"A_once = {rows[-1]['A_once']:+.2f}% at step {rows[-1]['step']}", C.checks([rows[-1]["A_once"] < 0]))]


def latest_start_claim(rows: list[dict], paper_rows: list[dict]) -> C.Claim | None:
    """Fig. 12: the latest start ends below an earlier one on P (None when P is not measured or one start)."""
    if rows[-1]["P_CL"] is None or len(rows) < 2:
        return None
    best = max(r["P_CL"] for r in rows[:-1])
    return C.Claim("Fig. 12", "the latest start ends below an earlier one on P",
                   f"{paper_rows[-1]['P_CL']:.1f} vs {max(r['P_CL'] for r in paper_rows[:-1]):.1f}",
                   f"{rows[-1]['P_CL']:.1f} vs {best:.1f}", C.checks([rows[-1]["P_CL"] < best]))


def corpus_claims(pubmed: list[dict], c4: list[dict]) -> list[C.Claim]:
    """Fig. 13: A falls more from the earliest to the latest start on PubMed than on C4, and is higher on PubMed."""
    change = {"pubmed": pubmed[-1]["A"] - pubmed[0]["A"], "c4": c4[-1]["A"] - c4[0]["A"]}
    higher = [a["A"] > b["A"] for a, b in zip(pubmed, c4)]
    theirs = paper.FIG13_A_CHANGE
    return [C.Claim("Fig. 13", "A falls more from earliest to latest start on PubMed than on C4",
                    f"{theirs['pubmed']:+.1f} vs {theirs['c4']:+.1f} %p".replace("-", "−"),
                    f"{change['pubmed']:+.2f} vs {change['c4']:+.2f} %p", C.checks([change["pubmed"] < change["c4"]])),
            C.Claim("Fig. 13", "higher A on PubMed than on C4", "every model (text; no numbers)",
                    f"at {sum(higher)} of {len(pubmed)} starts", C.checks(higher))]


def acquisition_entropy_claim(label: str, joined_by_seed: dict[int, list[dict]]) -> C.Claim:
    """Fig. 14: A rises with the start's knowledge entropy, judged per seed (claims.over_seeds)."""
    judged = [C.trend_of([r["entropy"] for r in j], [r["A"] for r in j], +1) for j in joined_by_seed.values()]
    return C.Claim("Fig. 14", f"{label}: A rises with knowledge entropy", "similar dynamics for OLMo and Pythia",
                   "; ".join(t.describe() for _, t in judged), C.over_seeds([v for v, _ in judged]))


def table_claims(ours: dict[str, list[dict]], papers: dict[str, list[dict]]) -> list[C.Claim]:
    """Tables 1-2: App. B.4.2's claims on our table beside the paper's verdict on its own numbers, then per setting
    whether A moves with the start the way it does in the paper's row."""
    theirs = {c.statement: c for c in hyperparameter_claims(papers)}
    out = []
    for c in hyperparameter_claims(ours):
        p = theirs.get(c.statement)
        out.append(C.Claim("Tables 1–2", c.statement, f"{p.ours} ({p.verdict})" if p else "—", c.ours, c.verdict))
    for s in papers:
        expected = int(np.sign(C.trend_of([r["step"] for r in papers[s]], [r["A"] for r in papers[s]], -1)[1].rho))
        out.append(start_trend_claim("Table 1", f"{paper.TABLE_ROWS[s]}: A against the start as in the paper",
                                     ours[s], "A", expected or -1, papers[s]))
    return out


def entropy_at_starts(plan: Plan, model: str, rows: list[dict], seed: int | None = None) -> list[dict]:
    """`rows` joined with the knowledge entropy (Dolma role) of their starting checkpoint as column "entropy"."""
    entropy = {r["step"]: r["entropy_dolma"] for r in entropy_rows(plan, model, seed)}
    return [{**r, "entropy": entropy[r["step"]]} for r in rows if r["step"] in entropy]


def entropy_correlations(joined: list[dict]) -> dict:
    """Footnote 11: Pearson and Spearman correlation of the start's knowledge entropy with A and with F."""
    out = {}
    for column in ("A", "F"):
        kept = [r for r in joined if r[column] is not None]
        out[column] = correlation([r["entropy"] for r in kept], [r[column] for r in kept]) if len(kept) >= 3 else None
    return out


def correlation_claim(joined_by_seed: dict[int, list[dict]], column: str, expected: int) -> C.Claim:
    """Knowledge entropy of the start against A (expected +) or F (expected −), judged per seed."""
    key = "entropy_vs_acquisition" if column == "A" else "entropy_vs_forgetting"
    paper_text = f"Pearson r = {paper.CORRELATION[key]:+.2f} (p = {paper.CORRELATION_P[key]})"
    verdicts, texts = [], []
    for seed, joined in joined_by_seed.items():
        kept = [r for r in joined if r[column] is not None]
        verdict, t = C.trend_of([r["entropy"] for r in kept], [r[column] for r in kept], expected)
        verdicts.append(verdict)
        c = entropy_correlations(joined)[column]
        texts.append((f"seed {seed}: " if len(joined_by_seed) > 1 else "")
                     + (f"r = {c['pearson_r']:+.2f}, {t.describe()}" if c else "fewer than 3 starts"))
    sign = "+" if expected > 0 else "−"
    return C.Claim("Footnote 11", f"knowledge entropy correlates with {column} ({sign})", paper_text, "; ".join(texts),
                   C.over_seeds(verdicts))


def perplexities(plan: Plan) -> dict[str, dict]:
    """Fig. 10: the entity-perplexity record of every continual corpus (computed once, cached)."""
    return {e.corpus: execute(e) for e in plan.perplexities}


def perplexity_claim(values: dict[str, list[float]]) -> C.Claim | None:
    if not {"pubmed", "c4"} <= set(values):
        return None
    median = {c: float(np.median(v)) for c, v in values.items()}
    return C.Claim("Fig. 10", "PubMed-role entities are more perplexing than C4-role ones",
                   "PubMed broad, many high-perplexity documents; C4 skewed low (histogram, no numbers)",
                   f"median {median['pubmed']:.1f} vs {median['c4']:.1f}", C.checks([median["pubmed"] > median["c4"]]))


def uniform_loss(tokenizer_dir) -> float:
    """ln(vocabulary size): what a uniform guess costs per token."""
    from transformers import AutoTokenizer
    return math.log(len(AutoTokenizer.from_pretrained(tokenizer_dir)))


# ----------------------------------------------------------------------------------------------- page text

def setup_markdown(plan: Plan) -> str:
    """The configuration this preset runs, the settings of Tables 1-2 and the corpora of the two roles."""
    from ..knowledge import injection_schedule, load_fictional_knowledge

    base = next(r for r in plan.continual if r.setting == "baseline" and r.intervention is None)
    cfg, fk = base.config, load_fictional_knowledge(base.knowledge)
    schedule = injection_schedule(fk, cfg.injections)
    once_sizes = sorted({len(group) - len(fk.paraphrase) for group in schedule.values()})
    tasks = list(base.tasks.names) if base.tasks else []
    text = role_markdown(plan)
    text += (f"**This preset:** {cfg.steps} updates per epoch × {cfg.epochs} epoch(s) of {cfg.batch_size} rows × "
            f"{cfg.seq_len} tokens, peak lr {cfg.lr:g} (warmup {cfg.warmup_fraction:.0%} from {cfg.warmup_start:g} × "
            f"lr, cosine to {cfg.lr_floor:g} × lr). An injection every {cfg.interval} updates ({cfg.injections} per "
            f"epoch, the last at update {cfg.steps}): all {len(fk.paraphrase)} paraphrase-set paragraphs, and a group "
            f"of {' or '.join(map(str, once_sizes))} of the {len(fk.once)} once-set paragraphs. The paper: "
            f"{paper.CONTINUAL_RECIPE}. Probes "
            f"are scored with `probe_normalisation = {cfg.probe_normalisation}` "
            f"({'mean log-probability per target token' if cfg.probe_normalisation == 'per_token' else 'the official code: summed NLL / (padded length − 1)'}). "
            f"P averages {len(tasks)} zero-shot multiple-choice tasks scored by lm-evaluation-harness (the paper used "
            f"OLMo's in-loop evaluator)" + (f" ({', '.join(tasks)})" if tasks else " (none: P and F are not measured)")
            + ".\n\n")
    text += "| setting | paper's row | overrides of the baseline |\n|---|---|---|\n" + "".join(
        f"| `{s}` | {paper.TABLE_ROWS.get(s, '—')} | {overrides or '—'} |\n" for s, overrides in plan.settings.items())
    world = json.loads((plan.world.world_dir / "world.json").read_text()) if plan.world else None
    roles = {"pubmed": "technical abstracts about new, rarely repeated invented entities",
             "c4": "casual web text about the familiar entities of the pretraining world"}
    text += "\n| role | data | what it is |\n|---|---|---|\n"
    for role, data in {r.corpus: r.corpus_data for r in plan.continual}.items():
        what = "—"
        if world is not None:
            s = world["corpora"][role]
            what = (f"{roles.get(role, 'generated text')}: {s['docs']} documents, {s['mean_words_per_doc']:.0f} words "
                    f"each, {s['distinct_entities']} distinct entities, each in {s['mean_docs_per_entity']:.1f} "
                    f"documents on average")
        text += f"| {role} | `{data}` | {what} |\n"
    return text


def validity_markdown(plan: Plan, model: str) -> str:
    """Is the miniature a valid instrument for acquisition? Per start: first-batch loss, K before and after, A,
    A per probe kind, P before and after; then the verdict in words."""
    uniform = f"; uniform guess {uniform_loss(plan.world.tokenizer_dir):.2f}" if plan.world else ""
    out = (f"| start | first batch loss (nats/token{uniform}) | K before → after | A (%) | "
           + " | ".join(f"A {k} (%)" for k in KINDS) + " | P before → after (%) |\n" + "|---" * (5 + len(KINDS)) + "|\n")
    results = {}
    for step in plan.starts.get(model, []):
        run = plan.run(model, step)
        r = results[step] = execute(run)
        by_kind = " | ".join(f"{r['A_by_kind'][k]['K']:+.1f}" for k in KINDS)
        p = "n/a" if r["P_PT"] is None else f"{r['P_PT']:.1f} → {r['P_CL']:.1f}"
        out += (f"| {step} | {first_batch_loss(run):.2f} | {r['K_PT']:.3f} → {r['K_CL']:.3f} | {r['A']:+.1f} | "
                f"{by_kind} | {p} |\n")
    acquired = sum(r["A"] > 0 for r in results.values())
    if acquired == len(results):
        verdict = "Continual learning raises the probes' log-probability at every start: A measures acquisition here."
    elif acquired:
        verdict = (f"Continual learning raises the probes' log-probability at {acquired} of {len(results)} starts; "
                   "where A < 0 it measures a net loss, not acquisition.")
    else:
        verdict = ("**Continual learning lowers the log-probability of the injected facts' targets at every start "
                   "(A < 0): in this preset the miniature does not acquire the injected knowledge, so its A values "
                   "measure degradation, not acquisition, and the comparisons with the paper's Figure 4 and Tables 1–2 "
                   "below do not test the paper's claims about acquisition.**")
    rising = {k: sum(r["A_by_kind"][k]["K"] > 0 for r in results.values()) for k in KINDS}
    verdict += (" By probe kind, A is positive at " + ", ".join(f"{rising[k]} of {len(results)} starts for {k}"
                                                                 for k in KINDS)
                + ". Composition probes ask for two-hop facts that no injected sentence states (the country of a birth "
                "city, the industry of an employer): what they score comes from the pretraining world, so their A "
                "also shows how the continual corpus wears that knowledge down.")
    return out + "\n" + verdict


def quantity_table(ours: dict[str, list[dict]], column: str, digits: int, caption: str) -> str:
    """One quantity of Tables 1-2: ours at the table's starts beside the paper's four columns, per setting."""
    def fmt(v):
        return "—" if v is None else f"{v:.{digits}f}"

    settings = list(ours)
    cols = [f"ours {r['step']} ({100 * r['fraction']:.0f}%)" for r in ours[settings[0]]]
    cols += [f"paper {s // 1000}k" for s in paper.CHECKPOINTS_1B]
    out = f"**{caption}**\n\n| setting | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    for s in settings:
        theirs = [fmt(r[column]) for r in paper_table(s)] if s in paper.TABLE1_A else ["—"] * len(paper.CHECKPOINTS_1B)
        out += f"| {paper.TABLE_ROWS.get(s, s)} | " + " | ".join([fmt(r[column]) for r in ours[s]] + theirs) + " |\n"
    return out + "\n"


def tables_markdown(ours: dict[str, list[dict]]) -> str:
    return (quantity_table(ours, "A", 1, "Table 1, acquisition A (%) ↑")
            + quantity_table(ours, "F", 1, "Table 1, forgetting F (%) ↓")
            + quantity_table(ours, "K_CL", 3, "Table 2, probe score K after CL ↑ (ours: nats per target token)")
            + quantity_table(ours, "P_CL", 1, "Table 2, downstream P after CL (%) ↑"))


def correlation_table(joined: list[dict]) -> str:
    out = "| pair | paper: Pearson r (p) | ours: Pearson r (p) | ours: Spearman ρ (p) | n |\n|---|---|---|---|---|\n"
    corr = entropy_correlations(joined)
    for q, key, p in (("A", "entropy_vs_acquisition", "6e-5"), ("F", "entropy_vs_forgetting", "1e-5")):
        c = corr[q]
        ours = (f"{c['pearson_r']:+.2f} ({c['pearson_p']:.2g}) | {c['spearman_r']:+.2f} ({c['spearman_p']:.2g}) | "
                f"{c['n']}") if c else f"fewer than 3 starts | — | {len(joined)}"
        out += f"| entropy, {q} | {paper.CORRELATION[key]:+.2f} ({p}) | {ours} |\n"
    return out


def facts(plan: Plan, curves: dict[int, list[dict]], claims: list[C.Claim]) -> dict:
    """What the README quotes from this chapter (ke.book.summary): A and F by start, over seeds."""
    from ..stats import spread
    steps = [r["step"] for r in next(iter(curves.values()))]
    by_start = {s: (spread([c[i]["A"] for c in curves.values()]), spread([c[i]["F"] for c in curves.values()
                                                                             if c[i]["F"] is not None] or [float("nan")]))
                for i, s in enumerate(steps)}
    final = plan.final_steps[plan.primary]
    text = "; ".join(f"{100 * s / final:.0f}%: A {a.mean:+.1f} ± {a.sd:.1f}, F {f.mean:+.1f} ± {f.sd:.1f}"
                     for s, (a, f) in by_start.items())
    trends = [c for c in claims if c.figure == "Fig. 4" and ("acquire less" in c.statement or "forget more"
                                                              in c.statement)]
    positive = sum(a.mean > 0 for a, _ in by_start.values())
    valid = (f"A > 0 (on average over the seeds) at {positive} of {len(by_start)} starts"
             + ("" if positive else ": continual learning lowers the injected facts' log-probability everywhere, so A "
                "measures degradation, not acquisition, and the paper's acquisition claims are not tested here"))
    return {"title": "Continual knowledge learning",
            "sentences": [f"Acquisition and forgetting (%) by start, mean ± sd over {len(curves)} seeds: {text}; {valid}."]
            + [f"{c.statement}: {c.verdict}." for c in trends]}
