"""Continual-learning and resuscitation runs as the chapters use them: each run is keyed by the model, its
starting checkpoint, the hyperparameter setting, the corpus and the intervention, and cached on disk under
runs/<preset>/continual/. The preset's `continual` section holds the base configuration and the settings
(the rows of Tables 1-2) as overrides of it."""
from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from .config import Preset
from .continual import ContinualConfig, continual_learning
from .errors import UserError
from .knowledge import load_fictional_knowledge
from .models import resolve_checkpoint


def continual_config(preset: Preset, setting: str = "baseline") -> ContinualConfig:
    settings = preset.continual.get("settings", {"baseline": {}})
    if setting not in settings:
        raise UserError(f"setting {setting!r} is not in preset {preset.name!r}; it has {', '.join(settings)}.")
    return ContinualConfig(**{**preset.continual.get("config", {}), **(settings[setting] or {})})


@lru_cache(maxsize=4)
def _knowledge(source: str):
    return load_fictional_knowledge(source)


def knowledge(preset: Preset):
    return _knowledge(preset.resolve(preset.continual["knowledge"]))


def tasks(preset: Preset) -> list | None:
    spec = preset.continual.get("tasks")
    return json.loads(Path(preset.resolve(spec)).read_text()) if spec else None


def run_dir(preset: Preset, key: str, step: int, name: str) -> Path:
    return preset.run_dir / "continual" / key / f"step{step}" / name


def run_continual(preset: Preset, key: str, step: int, *, setting: str = "baseline", corpus: str = "pubmed",
                  start: str | Path | None = None, tag: str | None = None, temperature: float | None = None,
                  progress: bool = False) -> dict:
    """One continual-learning run from checkpoint `step` of model `key` (or from `start`, a modified copy of
    it, named by `tag`), on the preset's corpus role `corpus`. Cached: a finished run is read back."""
    checkpoint = resolve_checkpoint(preset.model_source(key), step)
    cfg = continual_config(preset, setting)
    if temperature is not None:
        cfg = replace(cfg, attention_temperature=temperature)
    corpora = preset.continual["corpora"]
    if corpus not in corpora:
        raise UserError(f"corpus {corpus!r} is not in preset {preset.name!r}; it has {', '.join(corpora)}.")
    name = "-".join([setting, corpus] + ([tag] if tag else []))
    return continual_learning(str(start or checkpoint.path), preset.resolve(corpora[corpus]), knowledge(preset),
                              tasks(preset), cfg, run_dir(preset, key, step, name),
                              revision=None if start else checkpoint.revision, progress=progress)


def resuscitated(preset: Preset, key: str, step: int, ratio: float, factor: float) -> Path:
    """Checkpoint `step` of `key` after Algorithm 1 with C-bar from its entropy artifact (cached)."""
    from .analysis import entropy_dir, measure_checkpoint
    from .resuscitate import resuscitate_checkpoint

    checkpoint = resolve_checkpoint(preset.model_source(key), step)
    measure_checkpoint(preset, key, step, progress=False)
    out = preset.run_dir / "resuscitated" / key / checkpoint.name / f"p{ratio:g}-q{factor:g}"
    return resuscitate_checkpoint(checkpoint.path, entropy_dir(preset, key, checkpoint.name, "dolma"), ratio, factor,
                                  out, revision=checkpoint.revision, dtype=preset.models[key].dtype)


def run_resuscitated(preset: Preset, key: str, step: int, ratio: float, factor: float,
                     setting: str = "baseline", progress: bool = False) -> dict:
    start = resuscitated(preset, key, step, ratio, factor)
    return run_continual(preset, key, step, setting=setting, start=start, tag=f"resuscitated-p{ratio:g}-q{factor:g}",
                         progress=progress)


def planned_runs(preset: Preset, primary: str = "olmo") -> list[tuple[str, dict]]:
    """The runs the continual chapter reads, as (function of this module, keyword arguments): the baseline from
    every start of every model, the other corpora and the table settings from the primary model. `ke book`
    computes them in parallel before the chapter; the chapter computes any run missing from this list itself."""
    runs = [("run_continual", {"key": key, "step": step}) for key in preset.models for step in start_steps(preset, key)]
    if primary in preset.models:
        runs += [("run_continual", {"key": primary, "step": step, "corpus": corpus})
                 for corpus in preset.continual.get("corpora", {}) if corpus != "pubmed"
                 for step in start_steps(preset, primary)]
        runs += [("run_continual", {"key": primary, "step": step, "setting": setting})
                 for setting in preset.continual.get("settings", {}) if setting != "baseline"
                 for step in preset.continual.get("table_starts", [])]
    return runs


# ----------------------------------------------------------------------------- aggregation for the chapter

def check_setting_and_corpus(preset: Preset, setting: str, corpus: str) -> None:
    """Raise UserError for a setting or corpus role the preset does not define (before any run starts)."""
    continual_config(preset, setting)
    corpora = preset.continual.get("corpora", {})
    if corpus not in corpora:
        raise UserError(f"corpus {corpus!r} is not in preset {preset.name!r}; it has {', '.join(corpora)}.")


def start_steps(preset: Preset, key: str) -> list[int]:
    """Starting checkpoints of model `key` for the curves (continual.starts); empty when the preset has none."""
    return list(preset.continual.get("starts", {}).get(key) or [])


def result_row(result: dict, step: int, final: int) -> dict:
    """One run's result.json flattened: A, F (%), K and P before (PT) and after (CL), per set."""
    pt, cl = result["curve"][0], result["curve"][-1]
    return {"step": step, "fraction": step / final, "A": result["A"], "F": result["F"],
            "A_para": result["A_para"], "A_once": result["A_once"],
            "K_PT": result["K_PT"], "K_CL": result["K_CL"], "P_PT": result["P_PT"], "P_CL": result["P_CL"],
            "K_para_PT": pt["K_para"], "K_para_CL": cl["K_para"], "K_once_PT": pt["K_once"], "K_once_CL": cl["K_once"],
            "items_cut": result.get("provenance", {}).get("items_longer_than_seq_len")}


def curve_rows(preset: Preset, key: str, setting: str = "baseline", corpus: str = "pubmed",
               steps: list[int] | None = None, progress: bool = False) -> list[dict]:
    """One row (result_row) per starting checkpoint of `key` (default: continual.starts[key]), by step;
    the runs are computed on first use and cached."""
    from .zoo import final_step

    check_setting_and_corpus(preset, setting, corpus)
    final = final_step(preset, key)
    steps = start_steps(preset, key) if steps is None else steps
    return [result_row(run_continual(preset, key, step, setting=setting, corpus=corpus, progress=progress), step, final)
            for step in sorted(steps)]


def table(preset: Preset, setting: str, key: str = "olmo", corpus: str = "pubmed",
          progress: bool = False) -> list[dict]:
    """The rows of Tables 1-2 for one setting: curve_rows at continual.table_starts."""
    if not preset.continual.get("table_starts"):
        raise UserError(f"preset {preset.name!r} sets no continual.table_starts; "
                        f"list the starting steps of Tables 1-2 there.")
    return curve_rows(preset, key, setting, corpus, steps=preset.continual["table_starts"], progress=progress)


def paper_table(setting: str) -> list[dict]:
    """The paper's Tables 1-2 row of `setting` (OLMo-1B) in table()'s row format."""
    from . import paper

    final = paper.FINAL_STEP["OLMo-1B"]
    return [{"step": step, "fraction": step / final, "A": a, "F": f, "K_CL": k, "P_CL": p}
            for step, a, f, k, p in zip(paper.CHECKPOINTS_1B, paper.TABLE1_A[setting], paper.TABLE1_F[setting],
                                        paper.TABLE2_K[setting], paper.TABLE2_P[setting])]


def _compare(rows: list[dict], base: list[dict], column: str, sign: int) -> tuple[str, bool] | None:
    """Does `column` move in direction `sign` (-1 lower, +1 higher) against the baseline at most starts?"""
    pairs = [(r[column], b[column]) for r, b in zip(rows, base) if r[column] is not None and b[column] is not None]
    if not pairs:
        return None
    hits = sum(sign * (x - y) > 0 for x, y in pairs)
    mean = sum(x - y for x, y in pairs) / len(pairs)
    return f"{hits} of {len(pairs)} starts; mean difference {mean:+.2f}", hits > len(pairs) / 2


def _gap(rows: list[dict]) -> float:
    """A at the latest start minus A at the earliest."""
    return rows[-1]["A"] - rows[0]["A"]


def hyperparameter_claims(tables: dict[str, list[dict]]) -> list[dict]:
    """B.4.2's claims about Tables 1-2, evaluated on `tables` (setting -> rows by start, as table() or
    paper_table() give them): [{"claim", "value", "holds"}]. A claim whose settings are missing is left out."""
    checks = [("batch_x16", "A", -1, "larger batch → lower A"), ("batch_x16", "F", -1, "larger batch → milder F"),
              ("lr_x2.5", "A", -1, "higher lr → lower A"), ("lr_x2.5", "F", +1, "higher lr → more F"),
              ("epochs_3", "A", +1, "more epochs → higher A"), ("epochs_3", "F", +1, "more epochs → more F")]
    out = []
    base = tables.get("baseline")
    for setting, column, sign, claim in checks:
        if base and setting in tables:
            verdict = _compare(tables[setting], base, column, sign)
            if verdict:
                out.append({"claim": claim, "value": verdict[0], "holds": verdict[1]})
    if base and "lr_div4" in tables and len(base) > 1:
        small, wide = _gap(tables["lr_div4"]), _gap(base)
        out.append({"claim": "small lr → late models acquire better (A latest − A earliest above the baseline's)",
                    "value": f"{small:+.2f} vs baseline {wide:+.2f}", "holds": small > wide})
    return out


def entropy_at_starts(preset: Preset, key: str, rows: list[dict]) -> list[dict]:
    """`rows` (curve_rows) joined with the knowledge entropy (Dolma role) of their starting checkpoint as
    column "entropy"; starts that are not analysed checkpoints of `key` are left out."""
    from .analysis import entropy_rows

    entropy = {r["step"]: r["entropy_dolma"] for r in entropy_rows(preset, key)}
    return [{**r, "entropy": entropy[r["step"]]} for r in rows if r["step"] in entropy]


def entropy_correlations(preset: Preset, key: str = "olmo", setting: str = "baseline",
                         corpus: str = "pubmed") -> dict:
    """Pearson and Spearman correlation of knowledge entropy at the start with A and with F over the starts
    of `key` (footnote 11): {"rows", "A": correlation or None, "F": ...}; None with fewer than 3 points."""
    from .metrics import correlation

    rows = entropy_at_starts(preset, key, curve_rows(preset, key, setting, corpus))
    out = {"rows": rows}
    for column in ("A", "F"):
        kept = [r for r in rows if r[column] is not None]
        out[column] = (correlation([r["entropy"] for r in kept], [r[column] for r in kept])
                       if len(kept) >= 3 else None)
    return out


def entity_perplexities(preset: Preset, key: str = "olmo", progress: bool = False) -> dict[str, dict]:
    """Fig. 10: per-document mean entity perplexity (ke.metrics.entity_perplexity) in each continual corpus,
    measured with the last analysed checkpoint of `key`, on a seeded sample of continual.entity_docs documents
    (default 300) cut to continual.entity_seq_len tokens (default: the model's max_position_embeddings).
    Cached as JSON per corpus: {corpus: {"values": [float | None per document], ...settings}}."""
    import random

    from .data import load_corpus
    from .storage import write_json_atomically
    from .metrics import entity_perplexity
    from .models import load_model
    from .zoo import checkpoints

    checkpoint = checkpoints(preset, key)[-1]
    docs = int(preset.continual.get("entity_docs", 300))
    loaded, out = None, {}
    for corpus, spec in preset.continual.get("corpora", {}).items():
        path = preset.run_dir / "entity_perplexity" / key / checkpoint.name / f"{corpus}.json"
        setting = {"corpus": preset.resolve(spec), "checkpoint": checkpoint.name, "docs": docs, "seed": 0,
                   "seq_len": preset.continual.get("entity_seq_len")}
        if path.exists():
            record = json.loads(path.read_text())
            if {k: record.get(k) for k in setting} == setting:
                out[corpus] = record
                continue
        data = load_corpus(preset.resolve(spec))
        if "entities" not in data.column_names:
            raise UserError(f"continual corpus {corpus!r} ({spec}) has no 'entities' column; Fig. 10 needs the "
                            f"entities of each document as a list of strings.")
        if len(data) > docs:
            data = data.select(sorted(random.Random(0).sample(range(len(data)), docs)))
        if loaded is None:
            loaded = load_model(checkpoint.path, checkpoint.revision, dtype=preset.models[key].dtype,
                                device=preset.entropy.get("device", "cpu"))
        max_length = setting["seq_len"] or getattr(loaded.model.config, "max_position_embeddings", None)
        values = entity_perplexity(loaded.model, loaded.tokenizer, data["text"], data["entities"],
                                   batch_size=continual_config(preset).eval_batch_size, max_length=max_length,
                                   progress=progress)
        record = {**setting, "max_length": max_length, "values": values, "provenance": loaded.provenance}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(record, path)
        out[corpus] = record
    return out


def monotone_trend(rows: list[dict], column: str, x: str = "step") -> dict:
    """Spearman ρ of `column` against `x` over `rows` (None values skipped), with a two-sided p-value that is
    exact (all permutations) for n <= 8, where the usual t approximation means nothing: {"rho", "p", "n"}."""
    import itertools

    import numpy as np
    from scipy import stats

    points = [(r[x], r[column]) for r in rows if r.get(column) is not None]
    n = len(points)
    if n < 2 or len({y for _, y in points}) == 1:
        return {"rho": 0.0 if n >= 2 else float("nan"), "p": 1.0 if n >= 2 else float("nan"), "n": n}
    rx, ry = (stats.rankdata([p[i] for p in points]) for i in (0, 1))
    rho = float(np.corrcoef(rx, ry)[0, 1])
    if n > 8:
        return {"rho": rho, "p": float(stats.spearmanr(rx, ry).pvalue), "n": n}
    perms = np.array(list(itertools.permutations(ry)))
    centred = perms - perms.mean(axis=1, keepdims=True)
    cx = rx - rx.mean()
    rhos = centred @ cx / (np.linalg.norm(centred, axis=1) * np.linalg.norm(cx))
    return {"rho": rho, "p": float(np.mean(np.abs(rhos) >= abs(rho) - 1e-9)), "n": n}
