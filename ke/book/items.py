"""The work items of a plan: frozen dataclasses that each carry all one piece of work needs (paths,
configurations, settings), and the Plan that holds them with the lookups the chapters use. Planning is in
ke.book.plan, the description `ke plan` prints in ke.book.describe, running an item in ke.book.execute.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from ..continual import ContinualConfig
from ..downstream import TaskSet
from ..entropy import EntropySettings
from ..errors import UserError
from ..miniature.pretrain import PretrainConfig
from ..miniature.world import WorldConfig


# ----------------------------------------------------------------------------------------------- items

@dataclass(frozen=True)
class ResuscitationVariant:
    """Algorithm 1's ratio p and factor q: the resuscitated checkpoint's folder name and its tag in run names."""
    ratio: float
    factor: float

    @property
    def name(self) -> str:
        return f"p{self.ratio:g}-q{self.factor:g}"

    @property
    def tag(self) -> str:
        return f"resuscitated-{self.name}"


def temperature_tag(temperature: float) -> str:
    """The tag of a continual run with this attention temperature."""
    return f"temperature{temperature:g}"


@dataclass(frozen=True)
class RunId:
    """Which continual run of a checkpoint: a setting, a corpus role (pubmed, c4) and an intervention's tag
    (ResuscitationVariant.tag, temperature_tag) or none; `name` is the run's folder."""
    setting: str
    corpus: str
    intervention: str | None = None

    @property
    def name(self) -> str:
        return "-".join([self.setting, self.corpus] + ([self.intervention] if self.intervention else []))


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


def role(corpus: str, variant: str | None = None) -> str:
    """A measurement's role: its corpus role (dolma, pubmed, c4), or corpus_variant for a variant of the measurement
    (the folder name and the chapters' `entropy_<role>` column)."""
    return f"{corpus}_{variant}" if variant else corpus


@dataclass(frozen=True)
class Measurement:
    """Knowledge (and attention / next-token) entropy of one checkpoint on one corpus."""
    checkpoint: CheckpointRef | Resuscitation
    corpus: str                 # role(corpus, variant)
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
    variant: ResuscitationVariant
    out_dir: Path

    @property
    def tag(self) -> str:
        return f"{self.checkpoint.tag}/{self.variant.tag}"

    @property
    def dtype(self) -> str:
        return self.checkpoint.dtype

    def locate(self) -> tuple[str, str | None]:
        return str(self.out_dir), None


@dataclass(frozen=True)
class ContinualRun:
    """Continual knowledge learning from a checkpoint (or its resuscitated copy) on one corpus."""
    checkpoint: CheckpointRef
    id: RunId
    corpus_data: str
    knowledge: str
    tasks: TaskSet | None
    config: ContinualConfig
    out_dir: Path
    start: Resuscitation | None = None

    @property
    def setting(self) -> str:
        return self.id.setting

    @property
    def corpus(self) -> str:
        return self.id.corpus

    @property
    def intervention(self) -> str | None:
        return self.id.intervention

    @property
    def name(self) -> str:
        return self.id.name


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
    zoo: bool = False           # its runs are the base model's own (the zoo's), not the study's


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
            index[("resuscitation", r.checkpoint.tag, r.variant)] = r
        for c in self.continual:
            index[("continual", c.checkpoint.tag, c.id)] = c
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

    def measurement(self, ref: CheckpointRef | Resuscitation, corpus: str = "dolma",
                    variant: str | None = None) -> Measurement:
        return self.lookup("measurement", ref.tag, role(corpus, variant))

    def run(self, model: str, step: int, *, seed: int | None = None, setting: str = "baseline",
            corpus: str = "pubmed", intervention: str | None = None) -> ContinualRun:
        return self.lookup("continual", self.checkpoint(model, step, seed).tag, RunId(setting, corpus, intervention))

    def resuscitated(self, model: str, step: int, ratio: float, factor: float) -> Resuscitation:
        return self.lookup("resuscitation", self.checkpoint(model, step).tag, ResuscitationVariant(ratio, factor))
