"""Plan, then execute: a preset resolved once into fully specified work items, and the executors that run them.

`make_plan(preset)` reads the preset and nothing else reads it afterwards: every item below carries all it needs
(paths, configurations, settings), `execute(item)` runs one item (or returns its cached result), and the chapters
look items up in the plan to read their results. `ke plan --preset NAME` prints the plan without a network or a GPU.

Work, in dependency order (`Plan.work()`): the generated world and tokenizer; pretraining runs (one per zoo model and
seed, and the regime study's cells); per-checkpoint measurements (entropy on each corpus, world-fact accuracy);
resuscitated checkpoints (Algorithm 1 with a measured C-bar); continual-learning runs, entity perplexities (Fig. 10)
and the resuscitated checkpoints' entropies.
Artifacts live under the preset's run_dir, one folder per item: <kind>/<model>/seed<k>/step<N>/...
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path

from ..continual import ContinualConfig
from ..downstream import TaskSet
from ..entropy import EntropySettings
from ..errors import UserError
from ..miniature.pretrain import PretrainConfig
from ..miniature.world import TASKS, WorldConfig, task_set
from .presets import ModelSpec, Preset

ENTROPY_VARIANTS = ("count_padding",)  # extra measurements of the Dolma role: the official code's padding


# ----------------------------------------------------------------------------------------------- items

@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint: step `step` of the run at `source` (a zoo run folder, a local run folder or a hub id)."""
    model: str
    seed: int
    step: int
    source: str
    dtype: str = "float32"

    @property
    def tag(self) -> str:
        return f"{self.model}/seed{self.seed}/step{self.step}"

    def locate(self) -> tuple[str, str | None]:
        """(path or hub id, revision) of the weights; a hub step is resolved to its branch here, not at planning."""
        folder = Path(self.source) / f"step{self.step}"
        if folder.is_dir():
            return str(folder), None
        from ..models import resolve_checkpoint
        checkpoint = resolve_checkpoint(self.source, self.step)
        return checkpoint.path, checkpoint.revision


@dataclass(frozen=True)
class WorldBuild:
    config: WorldConfig
    vocab_size: int
    world_dir: Path
    tokenizer_dir: Path


@dataclass(frozen=True)
class PretrainRun:
    model: str
    seed: int
    config: PretrainConfig
    corpus: Path
    tokenizer: Path
    out_dir: Path


@dataclass(frozen=True)
class Measurement:
    """Knowledge (and attention / next-token) entropy of one checkpoint on one corpus."""
    checkpoint: CheckpointRef | Resuscitation
    corpus: str                 # role: dolma, pubmed, c4 (+ a variant suffix)
    data: str
    settings: EntropySettings
    max_docs: int | None
    device: str
    out_dir: Path
    bootstrap: int = 0          # draws of a bootstrap over documents (0: none); needs settings.per_document


@dataclass(frozen=True)
class FactCheck:
    """Accuracy of one checkpoint on the generated world's fact tasks (is the miniature a valid instrument?)."""
    checkpoint: CheckpointRef
    tasks: TaskSet
    chance: float
    questions: int              # over all tasks
    device: str
    out_path: Path


@dataclass(frozen=True)
class Resuscitation:
    """A checkpoint after Algorithm 1 with ratio p and factor q, C-bar from `coefficients` (a Measurement)."""
    checkpoint: CheckpointRef
    coefficients: Path
    ratio: float
    factor: float
    out_dir: Path

    @property
    def tag(self) -> str:
        return f"{self.checkpoint.tag}/resuscitated-p{self.ratio:g}-q{self.factor:g}"

    @property
    def dtype(self) -> str:
        return self.checkpoint.dtype

    def locate(self) -> tuple[str, str | None]:
        return str(self.out_dir), None


@dataclass(frozen=True)
class ContinualRun:
    """Continual knowledge learning from a checkpoint (or its resuscitated copy) on one corpus."""
    checkpoint: CheckpointRef
    setting: str
    corpus: str                 # role: pubmed, c4
    corpus_data: str
    knowledge: str
    tasks: TaskSet | None
    config: ContinualConfig
    out_dir: Path
    start: Resuscitation | None = None
    tag: str | None = None      # the intervention: resuscitated-p..-q.., temperature..

    @property
    def name(self) -> str:
        return "-".join([self.setting, self.corpus] + ([self.tag] if self.tag else []))


@dataclass(frozen=True)
class EntityPerplexity:
    """Fig. 10: per-document mean entity perplexity of one corpus under one checkpoint."""
    checkpoint: CheckpointRef
    corpus: str
    data: str
    docs: int
    seq_len: int | None
    batch_size: int
    device: str
    out_path: Path


@dataclass(frozen=True)
class RegimeCell:
    """One cell of the regime study: a sweep's configuration, its runs (one per seed) and their checkpoints."""
    sweep: str
    cell: str                   # "base", or the overrides as text ("weight_decay_efolds=0")
    config: PretrainConfig      # resolved (first seed's)
    runs: dict[int, list[CheckpointRef]]  # seed -> analysed checkpoints


Item = WorldBuild | PretrainRun | Measurement | FactCheck | Resuscitation | ContinualRun | EntityPerplexity


# ----------------------------------------------------------------------------------------------- the plan

@dataclass
class Plan:
    preset: str
    run_dir: Path
    labels: dict[str, str]                      # model key -> label
    roles: dict[str, str]                       # model key -> the paper's model it stands for
    checkpoints: dict[tuple[str, int], list[CheckpointRef]]   # (model, seed) -> analysed checkpoints
    saved: dict[tuple[str, int], list[int] | None]              # (model, seed) -> every step there is (None: hub)
    final_steps: dict[str, int]
    stages: dict[str, dict[str, int]]           # model -> initial / mid / final steps
    starts: dict[str, list[int]] = field(default_factory=dict)  # continual starts per model
    table_starts: list[int] = field(default_factory=list)
    settings: dict[str, dict] = field(default_factory=dict)      # Tables 1-2's rows (overrides of the baseline)
    world: WorldBuild | None = None
    pretraining: list[PretrainRun] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    fact_checks: list[FactCheck] = field(default_factory=list)
    resuscitations: list[Resuscitation] = field(default_factory=list)
    continual: list[ContinualRun] = field(default_factory=list)
    perplexities: list[EntityPerplexity] = field(default_factory=list)
    resuscitation: dict | None = None           # the resuscitation chapter's grid (model, final, mids, ...)
    regime: list[RegimeCell] = field(default_factory=list)
    primary: str = ""                           # the model the chapters study first (Preset.primary)

    @property
    def models(self) -> list[str]:
        return list(self.labels)

    def seeds(self, model: str) -> list[int]:
        return sorted(seed for key, seed in self.checkpoints if key == model)

    def work(self) -> list[list[Item]]:
        """Every item, in stages that may each run in parallel: a stage only needs earlier stages."""
        direct = [m for m in self.measurements if isinstance(m.checkpoint, CheckpointRef)]
        resuscitated = [m for m in self.measurements if not isinstance(m.checkpoint, CheckpointRef)]
        return [[self.world] if self.world else [], self.pretraining, direct + self.fact_checks,
                self.resuscitations, self.continual + self.perplexities + resuscitated]

    @cached_property
    def _index(self) -> dict:
        index = {}
        for m in self.measurements:
            index[("measurement", m.checkpoint.tag, m.corpus)] = m
        for f in self.fact_checks:
            index[("facts", f.checkpoint.tag)] = f
        for r in self.resuscitations:
            index[("resuscitation", r.tag)] = r
        for c in self.continual:
            index[("continual", c.checkpoint.tag, c.name)] = c
        for e in self.perplexities:
            index[("perplexity", e.corpus)] = e
        return index

    def checkpoint(self, model: str, step: int, seed: int | None = None) -> CheckpointRef:
        """Checkpoint `step` of a model's run: an analysed one, or any other the run saves (continual starts)."""
        seed = self.seeds(model)[0] if seed is None else seed
        refs = self.checkpoints[(model, seed)]
        saved = self.saved[(model, seed)]
        if saved is not None and step not in saved:
            raise UserError(f"model {model!r} (seed {seed}) has no checkpoint at step {step}; it has {saved}.")
        return next((r for r in refs if r.step == step), replace(refs[0], step=step))

    def lookup(self, *key):
        """The planned item with this key; a chapter asking for work the plan lacks is a bug, said plainly."""
        try:
            return self._index[key]
        except KeyError:
            raise UserError(f"the plan of preset {self.preset!r} has no item {key}; add it to ke.book.plan.") from None

    def measurement(self, ref: CheckpointRef | Resuscitation, corpus: str = "dolma") -> Measurement:
        return self.lookup("measurement", ref.tag, corpus)

    def run(self, model: str, step: int, *, seed: int | None = None, setting: str = "baseline",
            corpus: str = "pubmed", tag: str | None = None) -> ContinualRun:
        ref = self.checkpoint(model, step, seed)
        return self.lookup("continual", ref.tag, "-".join([setting, corpus] + ([tag] if tag else [])))

    def resuscitated(self, model: str, step: int, ratio: float, factor: float) -> Resuscitation:
        return self.lookup("resuscitation", f"{self.checkpoint(model, step).tag}/resuscitated-p{ratio:g}-q{factor:g}")


# ----------------------------------------------------------------------------------------------- planning

INITIAL_STAGE = 0.2  # the paper's "initial stage": trends are judged from 20% of the schedule on, after the early transient


def from_initial_stage(rows: list[dict]) -> list[dict]:
    """The rows (each with its "fraction" of the schedule) from the initial stage, 20% of training, on."""
    return [r for r in rows if r["fraction"] >= INITIAL_STAGE - 1e-9]


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
        roles = None if first and e.extras else ["dolma", *(["dolma_skip_first"] if regime else [])]
        for ref in refs:
            plan.measurements += _measurements_of(preset, ref, roles, bootstrap, full=first and e.extras)
            if preset.world is not None:
                plan.fact_checks.append(FactCheck(ref, task_set(preset.world_dir), 1 / preset.world.task_choices,
                                                  preset.world.task_questions * len(TASKS), e.device,
                                                  preset.run_dir / "tasks" / ref.tag / "tasks.json"))


def _measurements_of(preset: Preset, ref: CheckpointRef | Resuscitation, roles: list[str] | None = None,
                     bootstrap: int = 0, full: bool = True) -> list[Measurement]:
    """Entropy on each corpus; on the Dolma role (with `full`) also attention, next-token and ReLU-variant entropy
    (the costly part: eager attention weights and every position's logits), with `bootstrap` intervals over
    documents and the variant without each document's first position; and the official code's padding-counting
    variant."""
    e = preset.entropy
    roles = roles or [*e.corpora, *(f"dolma_{v}" for v in ENTROPY_VARIANTS), *(["dolma_skip_first"] if bootstrap else [])]
    out = []
    for role in roles:
        main = role == "dolma"
        settings = EntropySettings(seq_len=e.seq_len, batch_size=e.batch_size, attention=main and full,
                                   ntp=main and full, relu=main and full, count_padding=role == "dolma_count_padding",
                                   skip_first=role == "dolma_skip_first", per_document=main and bootstrap > 0)
        data = preset.resolve(e.corpora[role.split("_")[0]])
        out.append(Measurement(ref, role, data, settings, e.max_docs, e.device,
                               preset.run_dir / "entropy" / ref.tag / role, bootstrap if main else 0))
    return out


def _config(preset: Preset, setting: str) -> ContinualConfig:
    c = preset.continual
    if setting not in c.settings:
        raise UserError(f"setting {setting!r} is not in preset {preset.name!r}; it has {', '.join(c.settings)}.")
    return replace(c.config, **(c.settings[setting] or {}))


def _continual_run(preset: Preset, ref: CheckpointRef, setting: str = "baseline", corpus: str = "pubmed",
                   start: Resuscitation | None = None, tag: str | None = None,
                   temperature: float | None = None) -> ContinualRun:
    c = preset.continual
    config = _config(preset, setting)
    if temperature is not None:
        config = replace(config, attention_temperature=temperature)
    name = "-".join([setting, corpus] + ([tag] if tag else []))
    return ContinualRun(ref, setting, corpus, preset.resolve(c.corpora[corpus]), preset.resolve(c.knowledge),
                        _tasks(preset), config,
                        preset.run_dir / "continual" / ref.tag / name, start, tag)


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
        res = Resuscitation(ref, coefficients, ratio, factor,
                            preset.run_dir / "resuscitated" / ref.tag / f"p{ratio:g}-q{factor:g}")
        plan.resuscitations.append(res)
        _add_run(plan, _continual_run(preset, ref, start=res, tag=f"resuscitated-p{ratio:g}-q{factor:g}"))
        if step == final and ratio == r.ratio:  # Figs. 1 and 5 show these entropies
            plan.measurements += [m for m in _measurements_of(preset, res) if m.corpus == "dolma"]
    for t in r.temperatures:
        _add_run(plan, _continual_run(preset, plan.checkpoint(key, final), tag=f"temperature{t:g}", temperature=t))


def _cell_name(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base"


def _plan_regime(preset: Preset, plan: Plan) -> None:
    """The regime study's pretraining runs and their measurements (Dolma role, with bootstrap intervals, and
    without each document's first position). A cell keeps the base's length in tokens and its regime targets
    unless it sets them; a cell whose configuration equals the base's reuses the zoo's runs."""
    g = preset.regime
    key = g.base or preset.primary
    base = preset.models[key].pretrain
    fixed = replace(base, steps=base.resolved().steps, tokens_per_parameter=None)
    seeds = preset.models[key].seeds
    base_resolved = base.resolved()
    for sweep, cells in g.sweeps.items():
        for cell in [{}, *cells]:
            overrides = {k: v for k, v in cell.items() if k != "seeds"}
            config = replace(fixed, **overrides).resolved()
            runs = {}
            count = cell.get("seeds", len(seeds) if sweep in g.seeded or not overrides else 1)
            for seed in seeds[:count]:
                if replace(config, seed=0) == replace(base_resolved, seed=0):
                    runs[seed] = plan.checkpoints[(key, seed)]
                    continue
                name = f"regime/{sweep}/{_cell_name(overrides).replace(', ', '_').replace('=', '')}"
                out = preset.run_dir / name / f"seed{seed}"
                if all(r.out_dir != out for r in plan.pretraining):
                    plan.pretraining.append(PretrainRun(name, seed, replace(config, seed=seed),
                                                        preset.world_dir / "corpora" / "pretrain",
                                                        preset.tokenizer_dir, out))
                    refs = [CheckpointRef(name, seed, s, str(out)) for s in config.resolved_save_steps()]
                    for ref in refs:
                        plan.measurements += _measurements_of(preset, ref, ["dolma", "dolma_skip_first"], g.bootstrap,
                                                              full=False)
                runs[seed] = [CheckpointRef(name, seed, s, str(out)) for s in config.resolved_save_steps()]
            plan.regime.append(RegimeCell(sweep, _cell_name(overrides), config, runs))


# ----------------------------------------------------------------------------------------------- describing

def _plain(obj):
    """Plan items as YAML-ready data: dataclasses as mappings, paths as strings."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj


def _pretrain_numbers(config: PretrainConfig) -> dict:
    """What a resolved pretraining configuration amounts to: the numbers a preset gives as targets or fractions."""
    from ..miniature.pretrain import non_embedding_count
    from ..train import regime
    numbers = regime(config.schedule, weight_decay=config.weight_decay, tokens_per_step=config.batch_size *
                     config.seq_len, non_embedding_params=non_embedding_count(config))
    return {"warmup_steps": config.warmup_steps, "warmup_fraction": round(config.warmup_steps / config.steps, 4),
            "tokens": numbers["tokens"], "non_embedding_parameters": numbers["non_embedding_parameters"],
            "tokens_per_parameter": round(numbers["tokens_per_parameter"], 2),
            "weight_decay_efolds (S)": round(numbers["weight_decay_efolds"], 2)}


def _continual_numbers(config: ContinualConfig) -> dict:
    """A continual configuration's fractions and counts as steps and tokens."""
    return {"total_steps": config.total_steps, "warmup_steps": round(config.warmup_fraction * config.total_steps),
            "injection_steps": f"every {config.interval} (steps {config.interval}, {2 * config.interval}, ..., "
                               f"{config.steps} of each epoch)",
            "eval_every_steps": config.eval_interval,
            "tokens": config.total_steps * config.batch_size * config.seq_len}


def _counts(plan: Plan) -> dict:
    """Work items of each kind: one count, printed in the body and in the footer."""
    return {"world": int(plan.world is not None), "pretraining runs": len(plan.pretraining),
            "measurements": len(plan.measurements), "fact checks": len(plan.fact_checks),
            "resuscitated checkpoints": len(plan.resuscitations), "continual runs": len(plan.continual),
            "entity perplexities": len(plan.perplexities)}


def describe(plan: Plan) -> str:
    """The plan as YAML: what `ke plan` prints. Hub checkpoints show their step; the branch is resolved when the
    item runs (so planning needs no network)."""
    import yaml

    def where(ref):
        return ref.source if Path(ref.source).is_absolute() else f"{ref.source} (hub; revision resolved at run time)"

    configs = {}
    for run in plan.continual:
        configs.setdefault(run.setting, {**_plain(run.config), "derived": _continual_numbers(run.config)})
    data = {
        "preset": plan.preset, "run_dir": str(plan.run_dir),
        "world": _plain(plan.world) if plan.world else None,
        "models": {key: {"label": plan.labels[key], "role": plan.roles[key], "final_step": plan.final_steps[key],
                         "stages": plan.stages[key],
                         "seeds": {seed: {"source": where(refs[0]), "steps": [r.step for r in refs]}
                                   for (model, seed), refs in plan.checkpoints.items() if model == key}}
                   for key in plan.models},
        "pretraining": [{"model": r.model, "seed": r.seed, "out_dir": str(r.out_dir), "config": _plain(r.config),
                         "derived": _pretrain_numbers(r.config)} for r in plan.pretraining],
        "measurements": {"count": len(plan.measurements),
                         "on resuscitated checkpoints": sum(isinstance(m.checkpoint, Resuscitation)
                                                            for m in plan.measurements),
                         "corpora": sorted({f"{m.corpus}: {m.data}" for m in plan.measurements}),
                         "settings": sorted({json.dumps(_plain(m.settings)) for m in plan.measurements})},
        "continual_configurations": configs,
        "continual_runs": [{"checkpoint": r.checkpoint.tag, "setting": r.setting, "corpus": f"{r.corpus}: {r.corpus_data}",
                            **({"start": r.start.tag} if r.start else {}),
                            **({"attention_temperature": r.config.attention_temperature}
                               if r.config.attention_temperature != 1 else {})} for r in plan.continual],
        "resuscitated_checkpoints": [{"checkpoint": r.checkpoint.tag, "ratio": r.ratio, "factor": r.factor,
                                      "coefficients": str(r.coefficients)} for r in plan.resuscitations],
        "regime_cells": [{"sweep": c.sweep, "cell": c.cell, "seeds": sorted(c.runs), "steps": c.config.steps,
                          "weight_decay": c.config.weight_decay, "hidden_size": c.config.hidden_size,
                          "lr_shape": c.config.lr_shape, "family": c.config.family} for c in plan.regime],
        "knowledge": sorted({r.knowledge for r in plan.continual}),
        "tasks": sorted({f"{', '.join(r.tasks.names)} (lm-eval; local tasks in {r.tasks.include_path})"
                         if r.tasks and r.tasks.include_path else ", ".join(r.tasks.names) if r.tasks else "none"
                         for r in plan.continual}),
    }
    counts = ", ".join(f"{name} {count}" for name, count in _counts(plan).items())
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120) + f"# work items: {counts}"


# ----------------------------------------------------------------------------------------------- executing

def execute(item: Item, progress: bool = False):
    """Run one planned item, or return its cached result: the only code that turns plan items into artifacts."""
    if isinstance(item, WorldBuild):
        from ..miniature.zoo import build_world
        return build_world(item.config, item.vocab_size, item.world_dir, item.tokenizer_dir, progress=progress)
    if isinstance(item, PretrainRun):
        from ..miniature.pretrain import pretrain
        return pretrain(item.config, item.corpus, item.tokenizer, item.out_dir, progress=progress)
    if isinstance(item, Measurement):
        return _measure(item, progress)
    if isinstance(item, FactCheck):
        return _fact_check(item)
    if isinstance(item, Resuscitation):
        from ..resuscitate import resuscitate_checkpoint
        path, revision = item.checkpoint.locate()
        return resuscitate_checkpoint(path, item.coefficients, item.ratio, item.factor, item.out_dir,
                                      revision=revision, dtype=item.dtype)
    if isinstance(item, ContinualRun):
        return _continual(item, progress)
    if isinstance(item, EntityPerplexity):
        return _entity_perplexity(item, progress)
    raise TypeError(f"not a plan item: {item!r}")


@lru_cache(maxsize=1)
def _loaded(path: str, revision: str | None, dtype: str, device: str):
    """The last checkpoint loaded in this process: a checkpoint's measurements (one per corpus and variant) run
    one after another in one worker (run_parallel's chunks), so it is loaded once."""
    from ..models import load_model
    return load_model(path, revision, dtype=dtype, device=device)


def _measure(item: Measurement, progress: bool) -> dict:
    """run_entropy, and with item.bootstrap the intervals over documents, kept in bootstrap.json; the per-document
    coefficients they come from stay (4 MB for the 1B role's sample): the validity check's paired interval of an
    entropy change (ke.book.validity) resamples them again."""
    from ..entropy import RESULT_FILE, bootstrap_entropy, entropy_key, load_per_document, run_entropy
    from ..storage import read_cached, write_cached

    path, revision = item.checkpoint.locate()

    def entropy():
        key = entropy_key(path, revision, item.data, item.max_docs, item.checkpoint.dtype, item.settings)
        loaded = None if read_cached(item.out_dir / RESULT_FILE, key) else \
            _loaded(path, revision, item.checkpoint.dtype, item.device)
        return run_entropy(path, item.data, item.out_dir, revision=revision, max_docs=item.max_docs,
                           settings=item.settings, dtype=item.checkpoint.dtype, device=item.device, progress=progress,
                           loaded=loaded)

    record = entropy()
    if not item.bootstrap:
        return record
    key = {"entropy": record["key"], "draws": item.bootstrap}
    cached = read_cached(item.out_dir / "bootstrap.json", key)
    if cached is None:
        cached = write_cached(bootstrap_entropy(load_per_document(item.out_dir), item.bootstrap),
                              item.out_dir / "bootstrap.json", key)
    return {**record, "bootstrap": cached}


def _fact_check(item: FactCheck) -> dict:
    from ..models import load_model
    from ..storage import fingerprint, read_cached, write_cached

    path, revision = item.checkpoint.locate()
    key = {"model": path, "revision": revision, "tasks": item.tasks.fingerprint(), "model_files": fingerprint(path)}
    cached = read_cached(item.out_path, key)
    if cached is not None:
        return cached
    loaded = load_model(path, revision, dtype=item.checkpoint.dtype, device=item.device)
    accuracy = item.tasks.evaluate(loaded.model, loaded.tokenizer)
    record = {"step": item.checkpoint.step, "accuracy": {name.removeprefix("world_"): value
                                                         for name, value in accuracy.items()}, "chance": item.chance,
              "questions": item.questions}
    return write_cached(record, item.out_path, key)


def _continual(item: ContinualRun, progress: bool) -> dict:
    from ..continual import continual_learning
    from ..knowledge import load_fictional_knowledge

    if item.start is not None:
        execute(item.start)  # cached: the resuscitated checkpoint must exist
    path, revision = (item.start or item.checkpoint).locate()
    return continual_learning(path, item.corpus_data, load_fictional_knowledge(item.knowledge), item.tasks, item.config,
                              item.out_dir, revision=revision, progress=progress)


def _entity_perplexity(item: EntityPerplexity, progress: bool) -> dict:
    import random

    from ..data import load_corpus
    from ..metrics import entity_perplexity
    from ..models import load_model
    from ..storage import fingerprint, read_cached, write_cached

    path, revision = item.checkpoint.locate()
    key = {"corpus": item.data, "corpus_files": fingerprint(item.data), "model": path, "revision": revision,
           "model_files": fingerprint(path), "docs": item.docs, "seed": 0, "seq_len": item.seq_len}
    cached = read_cached(item.out_path, key)
    if cached is not None:
        return cached
    data = load_corpus(item.data)
    if "entities" not in data.column_names:
        raise UserError(f"continual corpus {item.corpus!r} ({item.data}) has no 'entities' column; Fig. 10 needs the "
                        f"entities of each document as a list of strings.")
    if len(data) > item.docs:
        data = data.select(sorted(random.Random(0).sample(range(len(data)), item.docs)))
    loaded = load_model(path, revision, dtype=item.checkpoint.dtype, device=item.device)
    max_length = item.seq_len or getattr(loaded.model.config, "max_position_embeddings", None)
    values = entity_perplexity(loaded.model, loaded.tokenizer, data["text"], data["entities"],
                               batch_size=item.batch_size, max_length=max_length, progress=progress)
    record = {"corpus": item.corpus, "checkpoint": item.checkpoint.tag, "docs": item.docs, "max_length": max_length,
              "values": values, "provenance": loaded.provenance}
    return write_cached(record, item.out_path, key)
