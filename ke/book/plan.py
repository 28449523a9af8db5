"""Plan, then execute: a preset resolved once into fully specified work items (the planning lives here).

`make_plan(preset)` (here) reads the preset and nothing else reads it afterwards: every item (ke.book.items) carries
all it needs (paths, configurations, settings), `execute(item)` (ke.book.execute) runs one item (or returns its cached
result), and the chapters look items up in the plan to read their results. `ke plan --preset NAME` prints the plan
(ke.book.describe) without a network or a GPU.

Work, in dependency order (`Plan.work()`): the generated world and tokenizer; pretraining runs (one per zoo model and
seed, and the regime study's cells); per-checkpoint measurements (entropy on each corpus, world-fact accuracy);
resuscitated checkpoints (Algorithm 1 with a measured C-bar); continual-learning runs, entity perplexities (Fig. 10)
and the resuscitated checkpoints' entropies.
Artifacts live under the preset's run_dir, one folder per item: <kind>/<model>/seed<k>/step<N>/...
"""
from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

from ..continual import ContinualConfig
from ..downstream import TaskSet
from ..entropy import EntropySettings
from ..errors import UserError
from ..miniature.world import TASKS, task_set
from .items import (CheckpointRef, ContinualRun, EntityPerplexity, FactCheck, Measurement, Plan, PretrainRun,
                    RegimeCell, Resuscitation, ResuscitationVariant, RunId, WorldBuild, role, temperature_tag)
from .presets import ModelSpec, Preset

ENTROPY_VARIANTS = ("count_padding",)  # extra measurements of the Dolma role: the official code's padding
SAMPLE_ROLES = (("dolma", None), ("dolma", "skip_first"))  # the regime study's: the sample, and without first tokens


# ----------------------------------------------------------------------------------------------- planning

INITIAL_STAGE = 0.2  # the paper's "initial stage": trends are judged from 20% of the schedule on, after the early transient


def past_initial_stage(fraction: float) -> bool:
    """Whether a checkpoint at this fraction of the schedule lies at or after the initial stage (20% of training)."""
    return fraction >= INITIAL_STAGE - 1e-9


def from_initial_stage(rows: list[dict]) -> list[dict]:
    """The rows (each with its "fraction" of the schedule) from the initial stage, 20% of training, on."""
    return [r for r in rows if past_initial_stage(r["fraction"])]


def _nearest(steps: list[int], target: float) -> int:
    return min(steps, key=lambda s: abs(s - target))


def _analysed_steps(spec: ModelSpec, key: str) -> list[int]:
    """The steps the preset analyses; a zoo run's are known from its configuration before it is trained."""
    if spec.is_zoo:
        saved = spec.pretrain.resolved().resolved_save_steps()
        if spec.steps is None:
            return saved
        missing = [s for s in spec.steps if s not in saved]
        if missing:
            raise UserError(f"models.{key}.steps names {missing}, which pretraining does not save; the saved steps "
                            f"are {saved} (set pretrain.save_steps to add them).")
        return sorted(spec.steps)
    if spec.steps is not None:
        return sorted(spec.steps)
    from ..models import list_checkpoints
    return [c.step for c in list_checkpoints(spec.source)]


def _saved_steps(spec: ModelSpec, analysed: list[int]) -> list[int] | None:
    """Every step a run has (None for a hub repo: any branch may be asked for, resolved when it runs)."""
    if spec.is_zoo:
        return spec.pretrain.resolved().resolved_save_steps()
    if Path(spec.source).expanduser().is_dir():
        from ..models import list_checkpoints
        return [c.step for c in list_checkpoints(spec.source)]
    return None


def make_plan(preset: Preset) -> Plan:
    """Resolve `preset` into a Plan (no training, no network: hub steps are resolved when they run)."""
    run = preset.run_dir
    world = None
    if preset.world is not None:
        world = WorldBuild(preset.world, preset.vocab_size, preset.world_dir, preset.tokenizer_dir)
    plan = Plan(preset.name, run, {k: s.label for k, s in preset.models.items()},
                {k: s.role for k, s in preset.models.items()}, {}, {}, {}, {}, world=world, primary=preset.primary)
    for key, spec in preset.models.items():
        steps = _analysed_steps(spec, key)
        for seed in spec.seeds:
            if spec.is_zoo:
                out = preset.zoo_dir / key / f"seed{seed}"
                plan.pretraining.append(PretrainRun(key, seed, replace(spec.pretrain.resolved(), seed=seed),
                                                    preset.world_dir / "corpora" / "pretrain", preset.tokenizer_dir, out))
                source = str(out)
            else:
                source = preset.resolve(spec.source)
            plan.checkpoints[(key, seed)] = [CheckpointRef(key, seed, s, source, spec.dtype) for s in steps]
            plan.saved[(key, seed)] = _saved_steps(spec, steps)
        final = spec.final_step or max(steps)
        plan.final_steps[key] = final
        plan.stages[key] = dict(spec.stages) or {"initial": _nearest(steps, INITIAL_STAGE * final),
                                                "mid": _nearest(steps, 0.5 * final), "final": _nearest(steps, final)}
    _plan_measurements(preset, plan)
    if preset.continual is not None:
        _plan_continual(preset, plan)
    if preset.continual is not None and preset.resuscitation is not None:
        _plan_resuscitation(preset, plan)
    if preset.regime is not None:
        _plan_regime(preset, plan)
    return plan


def _plan_measurements(preset: Preset, plan: Plan) -> None:
    e = preset.entropy
    for (model, seed), refs in plan.checkpoints.items():
        regime = preset.regime is not None and model == (preset.regime.base or preset.primary)
        bootstrap = preset.regime.bootstrap if regime else e.bootstrap
        # the first seed on every corpus and variant; the others on the pretraining sample (what the seeds decide)
        first = seed == plan.seeds(model)[0]
        roles = None if first and e.extras else list(SAMPLE_ROLES[:2 if regime else 1])
        for ref in refs:
            plan.measurements += _measurements_of(preset, ref, roles, bootstrap, full=first and e.extras)
            if preset.world is not None:
                plan.fact_checks.append(FactCheck(ref, task_set(preset.world_dir), 1 / preset.world.task_choices,
                                                  preset.world.task_questions * len(TASKS), e.device,
                                                  preset.run_dir / "tasks" / ref.tag / "tasks.json"))


def _measurements_of(preset: Preset, ref: CheckpointRef | Resuscitation,
                     roles: list[tuple[str, str | None]] | None = None, bootstrap: int = 0,
                     full: bool = True) -> list[Measurement]:
    """Entropy on each corpus; on the Dolma role (with `full`) also attention, next-token and ReLU-variant entropy
    (the costly part: eager attention weights and every position's logits), with `bootstrap` intervals over
    documents and the variant without each document's first position; and the official code's padding-counting
    variant. `roles` are (corpus, variant) pairs (items.role names them)."""
    e = preset.entropy
    roles = roles or [*((c, None) for c in e.corpora), *(("dolma", v) for v in ENTROPY_VARIANTS),
                      *(SAMPLE_ROLES[1:] if bootstrap else [])]
    out = []
    for corpus, variant in roles:
        main = (corpus, variant) == SAMPLE_ROLES[0]
        settings = EntropySettings(seq_len=e.seq_len, batch_size=e.batch_size, attention=main and full,
                                   ntp=main and full, relu=main and full, count_padding=variant == "count_padding",
                                   skip_first=variant == "skip_first", per_document=main and bootstrap > 0)
        data = preset.resolve(e.corpora[corpus])
        name = role(corpus, variant)
        out.append(Measurement(ref, name, data, settings, e.max_docs, e.device,
                               preset.run_dir / "entropy" / ref.tag / name, bootstrap if main else 0))
    return out


def _config(preset: Preset, setting: str) -> ContinualConfig:
    c = preset.continual
    if setting not in c.settings:
        raise UserError(f"setting {setting!r} is not in preset {preset.name!r}; it has {', '.join(c.settings)}.")
    return replace(c.config, **(c.settings[setting] or {}))


def _continual_run(preset: Preset, ref: CheckpointRef, setting: str = "baseline", corpus: str = "pubmed",
                   start: Resuscitation | None = None, temperature: float | None = None) -> ContinualRun:
    c = preset.continual
    config = _config(preset, setting)
    if temperature is not None:
        config = replace(config, attention_temperature=temperature)
    run_id = RunId(setting, corpus, start.variant.tag if start else
                   temperature_tag(temperature) if temperature is not None else None)
    return ContinualRun(ref, run_id, preset.resolve(c.corpora[corpus]), preset.resolve(c.knowledge), _tasks(preset),
                        config, preset.run_dir / "continual" / ref.tag / run_id.name, start)


def _tasks(preset: Preset) -> TaskSet | None:
    """The preset's downstream tasks as an lm-eval TaskSet (no task is loaded here)."""
    t = preset.continual.tasks
    if t is None:
        return None
    if t.world:
        return task_set(preset.world_dir)
    from ..downstream import PAPER_TASKS
    return TaskSet(names=tuple(t.names or PAPER_TASKS), metrics=tuple(t.metrics) if t.metrics else None,
                   include_path=preset.resolve(t.include_path) if t.include_path else None, limit=t.limit)


def _add_run(plan: Plan, run: ContinualRun) -> None:
    if all(r.out_dir != run.out_dir for r in plan.continual):
        plan.continual.append(run)


def _step(plan: Plan, model: str, value: int | float, where: str) -> int:
    """A step given as an int, or as a float fraction of the schedule: the saved step nearest to it; a start
    outside the run (`where` names the preset's key) is refused here, before any work."""
    seed = plan.seeds(model)[0]
    saved = plan.saved[(model, seed)]
    final = plan.final_steps[model]
    if isinstance(value, float):
        if not 0 <= value <= 1:
            raise UserError(f"preset {plan.preset!r}: {where} has the fraction {value:g}, outside the run of "
                            f"{model!r}; give a fraction from 0 to 1 of its {final} steps, or a step.")
        return _nearest(saved or [r.step for r in plan.checkpoints[(model, seed)]], value * final)
    if not 0 <= value <= final or (saved is not None and value not in saved):
        have = f"its saved steps are {saved}" if saved is not None else f"its run ends at step {final}"
        raise UserError(f"preset {plan.preset!r}: {where} names step {value}, which model {model!r} does not "
                        f"have; {have}.")
    return value


def _plan_continual(preset: Preset, plan: Plan) -> None:
    """The continual chapter's runs: the baseline from every start of every model and seed, the other corpora
    from the primary model's starts, each table setting from the table's starts (first seed)."""
    c = preset.continual
    primary = preset.primary
    plan.starts = {key: [_step(plan, key, v, f"continual.starts.{key}") for v in c.starts.get(key) or []]
                   for key in preset.models}
    plan.table_starts = [_step(plan, primary, v, "continual.table_starts") for v in c.table_starts]
    plan.settings = dict(c.settings)
    for key, steps in plan.starts.items():
        for seed in plan.seeds(key):
            for step in steps:
                _add_run(plan, _continual_run(preset, plan.checkpoint(key, step, seed)))
    for corpus in c.corpora:
        if corpus != "pubmed":
            for step in plan.starts.get(primary, []):
                _add_run(plan, _continual_run(preset, plan.checkpoint(primary, step), corpus=corpus))
    for setting in c.settings:
        if setting != "baseline":
            for step in plan.table_starts:
                _add_run(plan, _continual_run(preset, plan.checkpoint(primary, step), setting))
    last = plan.checkpoints[(primary, plan.seeds(primary)[0])][-1]
    for corpus, spec in (c.corpora.items() if c.entities else ()):
        plan.perplexities.append(EntityPerplexity(
            last, corpus, preset.resolve(spec), c.entity_docs, c.entity_seq_len, c.config.eval_batch_size,
            preset.entropy.device, preset.run_dir / "entity_perplexity" / last.tag / f"{corpus}.json"))


def _plan_resuscitation(preset: Preset, plan: Plan) -> None:
    """The resuscitation chapter's runs (paper Section 5, App. B.6-B.8) on the first seed of its model."""
    r = preset.resuscitation
    key = r.model or preset.primary
    steps = [ref.step for ref in plan.checkpoints[(key, plan.seeds(key)[0])]]
    final = _step(plan, key, r.final, "resuscitation.final") if r.final is not None else plan.stages[key]["final"]
    mids = [_step(plan, key, m, "resuscitation.mids") for m in r.mids] if r.mids else [plan.stages[key]["mid"],
                                                                 _nearest(steps, 0.75 * plan.final_steps[key])]
    starts = [_step(plan, key, s, "resuscitation.starts") for s in r.starts] if r.starts else (plan.starts.get(key)
                                                                        or sorted(set(plan.stages[key].values())))
    for name, value in (("final", [final]), ("mids", mids), ("starts", starts)):
        missing = [s for s in value if s not in steps]
        if missing:
            raise UserError(f"resuscitation.{name} names step(s) {missing} that model {key!r} has no analysed "
                            f"checkpoint for; it has {steps}.")
    plan.resuscitation = {"model": key, "final": final, "mids": list(mids), "starts": list(starts),
                          **{f.name: getattr(r, f.name) for f in dataclasses.fields(r)
                             if f.name not in ("model", "final", "mids", "starts")}}
    recipes = ({(final, r.ratio, q) for q in r.factors}                  # Fig. 5
               | {(final, p, 1.0) for p in r.ratios}                     # Fig. 15
               | {(s, r.ratio, r.factor) for s in {*starts, final}}      # Figs. 1, 16, 18
               | {(m, r.ratio, q) for m in mids for q in r.factors})     # Fig. 17
    for step in sorted({final, *mids, *starts}):
        _add_run(plan, _continual_run(preset, plan.checkpoint(key, step)))
    for step, ratio, factor in sorted(recipes):
        ref = plan.checkpoint(key, step)
        coefficients = next(m.out_dir for m in plan.measurements if m.checkpoint == ref and m.corpus == "dolma")
        variant = ResuscitationVariant(ratio, factor)
        res = Resuscitation(ref, coefficients, variant, preset.run_dir / "resuscitated" / ref.tag / variant.name)
        plan.resuscitations.append(res)
        _add_run(plan, _continual_run(preset, ref, start=res))
        if step == final and ratio == r.ratio:  # Figs. 1 and 5 show these entropies
            plan.measurements += [m for m in _measurements_of(preset, res) if m.corpus == "dolma"]
    for t in r.temperatures:
        _add_run(plan, _continual_run(preset, plan.checkpoint(key, final), temperature=t))


def _cell_name(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base"


def _plan_regime(preset: Preset, plan: Plan) -> None:
    """The regime study's pretraining runs and their measurements (Dolma role, with bootstrap intervals, and
    without each document's first position). A cell changes the centre (the base model, with regime.center's
    changes), keeping its length in tokens and its regime targets unless it sets them; a cell whose configuration
    equals the base model's reuses the zoo's runs, all of its seeds."""
    g = preset.regime
    key = g.base or preset.primary
    seeds = preset.models[key].seeds
    base_resolved = preset.models[key].pretrain.resolved()
    center = replace(preset.models[key].pretrain, **{k: v for k, v in g.center.items() if k != "seeds"})
    fixed = replace(center, steps=center.resolved().steps, tokens_per_parameter=None)
    for sweep, cells in g.sweeps.items():
        for cell in [{}, *cells]:
            overrides = {k: v for k, v in cell.items() if k != "seeds"}
            config = replace(fixed, **overrides).resolved()
            if replace(config, seed=0) == replace(base_resolved, seed=0):
                plan.regime.append(RegimeCell(sweep, _cell_name(overrides), config,
                                              {seed: plan.checkpoints[(key, seed)] for seed in seeds}, zoo=True))
                continue
            if overrides:
                count = cell.get("seeds", len(seeds) if sweep in g.seeded else 1)
                name = f"regime/{sweep}/{_cell_name(overrides).replace(', ', '_').replace('=', '')}"
            else:   # the centre, shared by every sweep
                count, name = g.center.get("seeds", len(seeds)), "regime/base"
            runs = {}
            for seed in seeds[:count]:
                out = preset.run_dir / name / f"seed{seed}"
                if all(r.out_dir != out for r in plan.pretraining):
                    plan.pretraining.append(PretrainRun(name, seed, replace(config, seed=seed),
                                                        preset.world_dir / "corpora" / "pretrain",
                                                        preset.tokenizer_dir, out))
                    refs = [CheckpointRef(name, seed, s, str(out)) for s in config.resolved_save_steps()]
                    for ref in refs:
                        plan.measurements += _measurements_of(preset, ref, list(SAMPLE_ROLES), g.bootstrap,
                                                              full=False)
                runs[seed] = [CheckpointRef(name, seed, s, str(out)) for s in config.resolved_save_steps()]
            plan.regime.append(RegimeCell(sweep, _cell_name(overrides), config, runs))
