"""Presets: plain YAML files in parameters/, read into typed dataclasses and checked when they load.

Every section is a dataclass; a key a section does not know, a required key that is missing or a value of the
wrong kind is a one-sentence error naming the file, the key and the fix, so a preset cannot drift silently from
the code that reads it. The preset is read once; `ke.book.plan.make_plan` turns it into fully specified runs.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..continual import ContinualConfig
from ..continual import validate as validate_continual
from ..errors import UserError
from ..miniature.pretrain import PretrainConfig
from ..miniature.world import WorldConfig
from ..resuscitate import check_recipe
from .paper import PAPER_MODELS

SECTIONS = ("name", "run_dir", "world", "models", "entropy", "continual", "resuscitation", "regime")


@dataclass
class Recipe:
    """A pretraining recipe, enough for the regime numbers (tokens per parameter, weight-decay e-folds)."""
    steps: int                      # optimizer updates of the whole schedule
    tokens_per_step: int            # global batch in tokens
    lr: float                       # peak learning rate
    weight_decay: float
    warmup_steps: int = 0
    lr_floor: float = 0.1           # final lr = lr_floor x peak
    lr_shape: str = "cosine"        # cosine | linear | constant
    warmup_start: float = 0.0
    non_embedding_params: int = 0   # 0: count them on the loaded model
    source: str = ""                # where the numbers come from


@dataclass
class ModelSpec:
    """One model of a preset: trained here (source "zoo") or read from a hub repo or a local run folder."""
    role: str                       # the paper's model it stands for: olmo-1b | olmo-7b | pythia-1.4b
    family: str                     # olmo | gpt_neox (architecture of a zoo model; informative for others)
    label: str                      # what the figures call it
    source: str = "zoo"             # "zoo", a hub id, or a run folder of stepN/ checkpoints
    steps: list[int] | None = None  # checkpoints to analyse; None: every saved checkpoint
    final_step: int | None = None   # the "100%" of the schedule; None: the last analysed step
    stages: dict[str, int] = field(default_factory=dict)  # initial / mid / final steps; {}: 20%, 50%, 100%
    seeds: list[int] = field(default_factory=lambda: [0])  # zoo: one pretraining run per seed (the first is shown)
    pretrain: PretrainConfig | None = None  # zoo models: size and schedule (its `seed` is replaced by each seed)
    recipe: Recipe | None = None    # real models: the published recipe (zoo models: derived from `pretrain`)
    dtype: str = "float32"
    selected: bool = False          # chosen for knowing its world, acquiring and a decaying knowledge entropy (book
    # page "How the model system was chosen"): its Fig. 2 trend is reported as "selected", never as "agrees"

    @property
    def is_zoo(self) -> bool:
        return self.source == "zoo"


@dataclass
class EntropySection:
    corpora: dict[str, str]         # role -> data spec; "world:<path>" = inside the generated world; needs "dolma"
    max_docs: int = 256
    seq_len: int = 128
    batch_size: int = 32
    device: str = "cpu"
    bootstrap: int = 0              # bootstrap draws over documents for every model's Dolma-role entropy (0: none;
    # the regime study's base model always has them)
    extras: bool = True             # also attention / next-token / ReLU-variant entropy and the padding variant
    # (False: knowledge entropy on each corpus only, e.g. for the pilots of the model system)


@dataclass
class TasksSection:
    """Downstream tasks for P and F (Eq. 5), scored by lm-evaluation-harness."""
    world: bool = False             # the generated world's six fact tasks (the miniature's stand-ins)
    names: list[str] | None = None  # lm-eval task names; None: the paper's six (SciQ, Winogrande, PIQA, OBQA, ...)
    metrics: list[str] | None = None  # one per name: acc | acc_norm (= OLMo's len_norm); None: the paper's per task
    include_path: str | None = None   # a folder of local lm-eval task YAMLs
    limit: int | None = None        # documents per task (None: all)


@dataclass
class ContinualSection:
    corpora: dict[str, str]         # role -> corpus (saved data set folder, .jsonl, or "world:..."); needs "pubmed"
    knowledge: str                  # folder or URL of the Fictional Knowledge JSON files, or "world:knowledge"
    config: ContinualConfig         # the baseline run (ke.continual.ContinualConfig)
    tasks: TasksSection | None = None  # downstream tasks for P and F; None: not measured
    # Starting checkpoints: a step (int), or a fraction of the schedule (float, e.g. 0.2: the saved step nearest 20%)
    starts: dict[str, list[int | float]] = field(default_factory=dict)  # model key -> starts of the curves
    table_starts: list[int | float] = field(default_factory=list)        # Tables 1-2's columns (primary model)
    settings: dict[str, dict] = field(default_factory=lambda: {"baseline": {}})  # Tables 1-2's rows: overrides
    entities: bool = True           # Fig. 10: the corpora carry an `entities` column (the miniature's do)
    entity_docs: int = 300          # Fig. 10: documents per corpus
    entity_seq_len: int | None = None  # Fig. 10: tokens per document (None: the model's context)


@dataclass
class ResuscitationSection:
    model: str | None = None        # key of the model (default: the OLMo-1B role)
    final: int | float | None = None  # the final checkpoint (Figs. 1, 5, 15, 18); default: the final stage
    mids: list[int | float] | None = None   # Fig. 17 (the paper: 369k and 554k); default: mid stage and ~75%
    starts: list[int | float] | None = None  # Fig. 16; default: the continual starts of the model
    # (steps, or fractions of the schedule as for continual.starts)
    ratio: float = 0.5              # p of Figs. 5, 16, 17
    factor: float = 2.0             # q of Figs. 1, 16 and Fig. 18's FFN reference
    factors: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0])       # q of Figs. 5, 17
    ratios: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])   # p of Fig. 15 (q = 1)
    temperatures: list[float] = field(default_factory=lambda: [1.5, 2.0, 2.5, 3.0])  # Fig. 18


@dataclass
class RegimeSection:
    """The regime study (beyond the paper): pretraining runs that change one thing of a base model at a time.
    Each sweep is a list of cells, each cell a mapping of ke.miniature.pretrain.PretrainConfig fields that override
    the centre's configuration (the base model's, changed by `center`); every sweep also holds the centre itself. A
    cell keeps the centre's length (its resolved steps) and its regime targets (weight-decay e-folds, warmup
    fraction) unless it sets them."""
    base: str | None = None         # key of the zoo model the cells change (default: the primary)
    center: dict = field(default_factory=dict)  # the central cell: the base's configuration with these fields
    # changed (and `seeds: n`, its first n seeds; default all). Empty: the base's own runs. Every cell keeps the
    # centre's length, so a longer base need not lengthen the whole study; a cell equal to the base reuses its runs.
    sweeps: dict[str, list[dict]] = field(default_factory=dict)
    seeded: list[str] = field(default_factory=list)  # sweeps run with every seed of the base (others: its first,
    # unless a cell sets `seeds: n`, the first n of the base's seeds)
    bootstrap: int = 1000           # bootstrap draws over documents for each entropy interval


@dataclass
class Preset:
    name: str
    run_dir: Path
    models: dict[str, ModelSpec]
    entropy: EntropySection
    world: WorldConfig | None = None
    vocab_size: int = 4096          # the miniature's tokenizer (world.vocab_size in the YAML)
    continual: ContinualSection | None = None
    resuscitation: ResuscitationSection | None = None
    regime: RegimeSection | None = None
    root: Path = Path(".")
    source: Path | None = None      # the YAML file it was read from

    @property
    def zoo_dir(self) -> Path:
        return self.run_dir / "zoo"

    @property
    def world_dir(self) -> Path:
        return self.zoo_dir / "world"

    @property
    def tokenizer_dir(self) -> Path:
        return self.zoo_dir / "tokenizer"

    def resolve(self, spec: str) -> str:
        """A data spec: "world:<path>" is a path inside the generated world, a relative path is relative to the
        project root, anything else (a hub id, a URL, an absolute path) is used as is."""
        if spec.startswith("world:"):
            return str(self.world_dir / spec[len("world:"):])
        path = Path(spec).expanduser()
        if not path.is_absolute() and (self.root / path).exists():
            return str(self.root / path)
        return spec

    def by_role(self, role: str) -> str | None:
        """The key of the model that plays `role` (olmo-1b, olmo-7b, pythia-1.4b), or None."""
        return next((key for key, spec in self.models.items() if spec.role == role), None)

    @property
    def primary(self) -> str:
        """The model the chapters study first: the OLMo-1B role, or the first model."""
        return self.by_role("olmo-1b") or next(iter(self.models))


# ----------------------------------------------------------------------------------------------- reading

def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) that holds parameters/."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "parameters").is_dir():
            return folder
    raise UserError(f"no parameters/ folder at or above {here}; run from the project checkout.")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _check_value(value, hint, where: str, file: Path):
    """`value` converted to type `hint` (dataclasses recursively), or a one-sentence error."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if options == [int, float]:  # a step, or a fraction of the schedule
            return _check_value(value, float if isinstance(value, float) else int, where, file)
        hint = options[0]
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"{file}: {where} must be a mapping of {hint.__name__} fields; got {value!r}.")
        return build(hint, value, where, file)
    kinds = {int: (int,), float: (int, float), str: (str,), bool: (bool,), list: (list,), dict: (dict,),
             tuple: (list, tuple)}
    expected = kinds.get(origin or hint)
    if expected and (not isinstance(value, expected) or (hint is int and isinstance(value, bool))):
        raise UserError(f"{file}: {where} must be {getattr(origin or hint, '__name__', hint)}; got {value!r}; "
                        "fix the value.")
    if hint is float:
        return float(value)
    if origin is list:
        (item,) = typing.get_args(hint) or (object,)
        return [_check_value(v, item, f"{where}[{i}]", file) for i, v in enumerate(value)] if item is not object \
            else list(value)
    if origin is dict:
        _, item = typing.get_args(hint) or (str, object)
        return {k: _check_value(v, item, f"{where}.{k}", file) for k, v in value.items()} if item is not object \
            else dict(value)
    if origin is tuple:
        return tuple(value)
    return value


def unknown_key(key, known, what: str) -> str:
    """The end of an error about an unknown key: the nearest known one, when one is near, else all of them."""
    near = difflib.get_close_matches(str(key), list(known), n=1)
    return f"{what} {key!r}; did you mean {near[0]!r}?" if near else f"{what} {key!r}; the keys are {', '.join(known)}."


def build(cls, mapping: dict, where: str, file: Path):
    """A `cls` dataclass from a YAML mapping: unknown keys, missing required keys and values of the wrong kind
    are one-sentence errors naming the file and the key."""
    if not isinstance(mapping, dict):
        raise UserError(f"{file}: {where} must be a mapping of {cls.__name__} fields; got {mapping!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in mapping if k not in names]
    if unknown:
        raise UserError(f"{file}: {where} has {unknown_key(unknown[0], names, 'unknown key')}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in mapping]
    if missing:
        raise UserError(f"{file}: {where} lacks the required key {missing[0]!r}; add it.")
    return cls(**{k: _check_value(v, hints[k], f"{where}.{k}", file) for k, v in mapping.items()})


def _read_yaml(path: Path, root: Path, seen: tuple = ()) -> dict:
    """A preset file as a mapping; `extends: NAME` reads parameters/NAME.yaml first and merges this file over it
    (mappings key by key, anything else replaced), so a preset carries only what it changes."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{path} is not valid YAML{line} ({problem}); fix the file there.") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must be a mapping of preset sections (name, models, ...); got {raw!r}.")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    base_path = root / "parameters" / f"{base}.yaml"
    if not base_path.is_file() or base_path in seen:
        raise UserError(f"{path}: extends names {base!r}, which is "
                        f"{'a cycle' if base_path in seen else 'no file in parameters/'}; name another preset.")
    return _merge(_read_yaml(base_path, root, (*seen, path)), raw)


def load_preset(name: str = "default", root: Path | None = None, **overrides) -> Preset:
    """Read parameters/<name>.yaml (or a YAML path) and apply section overrides (None keeps the file's value;
    Papermill passes a chapter's parameters this way)."""
    root = project_root(root)
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else root / "parameters" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (root / "parameters").glob("*.yaml")))
        raise UserError(f"preset {name!r} does not exist; choose one of {known} or pass a YAML file.")
    raw = _read_yaml(path, root)
    unknown = [k for k in [*raw, *overrides] if k not in SECTIONS]
    if unknown:
        raise UserError(f"{path}: {unknown_key(unknown[0], SECTIONS, 'unknown section')}")
    for key, value in overrides.items():
        if value is not None:
            raw[key] = _merge(raw.get(key) or {}, value) if isinstance(value, dict) else value
    for key in ("name", "models", "entropy"):
        if key not in raw:
            raise UserError(f"{path} lacks the required section {key!r}; add it (see parameters/default.yaml).")
    if not isinstance(raw["models"], dict) or not raw["models"]:
        raise UserError(f"{path}: models must be a mapping of at least one model (key: role, family, label, ...); "
                        f"got {raw['models']!r}.")
    if raw.get("world") is not None and not isinstance(raw["world"], dict):
        raise UserError(f"{path}: world must be a mapping of WorldConfig fields; got {raw['world']!r}.")
    world = dict(raw["world"]) if raw.get("world") else None
    vocab_size = world.pop("vocab_size", 4096) if world else 4096
    models = {}
    for key, spec in raw["models"].items():
        if not isinstance(spec, dict):
            raise UserError(f"{path}: models.{key} must be a mapping of ModelSpec fields (role, family, label, ...); "
                            f"got {spec!r}.")
        if "family" in (spec.get("pretrain") or {}):
            raise UserError(f"{path}: models.{key}.pretrain sets family; set it once, as models.{key}.family.")
        models[key] = build(ModelSpec, spec, f"models.{key}", path)
        if models[key].pretrain is not None:   # the model's family is its architecture when trained here
            models[key].pretrain = dataclasses.replace(models[key].pretrain, family=models[key].family)
    run_dir = Path(raw.get("run_dir") or f"runs/{raw['name']}")
    preset = Preset(
        name=raw["name"], run_dir=run_dir if run_dir.is_absolute() else root / run_dir, models=models,
        entropy=build(EntropySection, raw["entropy"], "entropy", path),
        world=build(WorldConfig, world, "world", path) if world is not None else None, vocab_size=vocab_size,
        continual=build(ContinualSection, raw["continual"], "continual", path)
        if raw.get("continual") is not None else None,
        resuscitation=build(ResuscitationSection, raw["resuscitation"] or {}, "resuscitation", path)
        if raw.get("resuscitation", None) is not None else None,
        regime=build(RegimeSection, raw["regime"] or {}, "regime", path) if raw.get("regime") is not None else None,
        root=root, source=path)
    validate(preset, path)
    return preset


def validate(preset: Preset, path: Path) -> None:
    """Cross-section checks: what one section names must exist in another."""
    for key, spec in preset.models.items():
        if spec.role not in PAPER_MODELS:
            raise UserError(f"{path}: models.{key}.role is {spec.role!r}; choose one of {', '.join(PAPER_MODELS)}.")
        if spec.is_zoo and spec.pretrain is None:
            raise UserError(f"{path}: models.{key} is trained here (source: zoo) but has no pretrain section; add one.")
        if spec.is_zoo and preset.world is None:
            raise UserError(f"{path}: models.{key} is trained here (source: zoo) but the preset has no world; "
                            "add a world section or give the model a source.")
        if not spec.seeds:
            raise UserError(f"{path}: models.{key}.seeds is empty; give at least one seed, e.g. [0].")
        context = spec.pretrain.seq_len if spec.is_zoo else None  # a zoo model's max_position_embeddings
        if context is not None and preset.entropy.seq_len > context:
            raise UserError(f"{path}: entropy.seq_len {preset.entropy.seq_len} is longer than the context of "
                            f"models.{key} (pretrain.seq_len {context}); set entropy.seq_len to {context} or less.")
    e = preset.entropy
    for name in ("seq_len", "batch_size", "max_docs"):
        if getattr(e, name) < 1:
            raise UserError(f"{path}: entropy.{name} is {getattr(e, name)}; it must be a positive integer.")
    if e.bootstrap < 0:
        raise UserError(f"{path}: entropy.bootstrap is {e.bootstrap}; give a number of draws, or 0 for none.")
    roles = [spec.role for spec in preset.models.values()]
    if len(set(roles)) != len(roles):
        raise UserError(f"{path}: two models play the same role; give each model its own role.")
    if "dolma" not in preset.entropy.corpora:
        raise UserError(f"{path}: entropy.corpora needs a 'dolma' entry (the pretraining sample); add it.")
    c = preset.continual
    if c is not None:
        if "pubmed" not in c.corpora:
            raise UserError(f"{path}: continual.corpora needs a 'pubmed' entry (the main continual corpus); add it.")
        for key in c.starts:
            if key not in preset.models:
                raise UserError(f"{path}: continual.starts names model {key!r}, which the preset does not have; "
                                f"its models are {', '.join(preset.models)}.")
        fields = {f.name for f in dataclasses.fields(ContinualConfig)}
        for setting, overrides in c.settings.items():
            bad = [k for k in (overrides or {}) if k not in fields]
            if bad:
                raise UserError(f"{path}: continual.settings.{setting} overrides "
                                f"{unknown_key(bad[0], sorted(fields), 'unknown field')}")
            config = dataclasses.replace(c.config, **(overrides or {}))
            try:
                validate_continual(config)
            except UserError as error:
                raise UserError(f"{path}: continual.config with settings.{setting}: {error}") from None
            for key, spec in preset.models.items():
                if spec.is_zoo and config.seq_len > spec.pretrain.seq_len:
                    raise UserError(f"{path}: continual.config with settings.{setting} has seq_len {config.seq_len}, "
                                    f"longer than the context of models.{key} ({spec.pretrain.seq_len}); shorten it.")
        if c.entity_docs < 1 or c.entity_seq_len is not None and c.entity_seq_len < 2:
            raise UserError(f"{path}: continual.entity_docs must be at least 1 and entity_seq_len at least 2 (or "
                            f"unset); got {c.entity_docs} and {c.entity_seq_len}.")
        if "baseline" not in c.settings:
            raise UserError(f"{path}: continual.settings needs a 'baseline' entry (may be empty: {{}}); add it.")
    g = preset.regime
    if g is not None:
        base = g.base or preset.primary
        if base not in preset.models or not preset.models[base].is_zoo:
            raise UserError(f"{path}: regime.base is {base!r}; it must be a model trained here (source: zoo).")
        fields = {f.name for f in dataclasses.fields(PretrainConfig)}
        bad = [k for k in g.center if k not in fields | {"seeds"}]
        if bad:
            raise UserError(f"{path}: regime.center overrides {unknown_key(bad[0], sorted(fields), 'unknown field')}")
        for sweep, cells in g.sweeps.items():
            for cell in cells:
                bad = [k for k in cell if k not in fields | {"seeds"}]
                if bad:
                    raise UserError(f"{path}: regime.sweeps.{sweep} has a cell that overrides "
                                    f"{unknown_key(bad[0], sorted(fields), 'unknown field')}")
                if not set(cell) - {"seeds"}:
                    raise UserError(f"{path}: regime.sweeps.{sweep} has a cell {cell} that changes nothing; give "
                                    f"it a PretrainConfig field to override, e.g. weight_decay_efolds.")
                if cell.get("seq_len", e.seq_len) < e.seq_len:
                    raise UserError(f"{path}: regime.sweeps.{sweep} has a cell with seq_len {cell['seq_len']}, "
                                    f"shorter than entropy.seq_len {e.seq_len}; its runs could not be measured.")
        unknown = [s for s in g.seeded if s not in g.sweeps]
        if unknown:
            raise UserError(f"{path}: regime.seeded names {unknown[0]!r}, which is not a sweep; the sweeps are "
                            f"{', '.join(g.sweeps)}.")
    r = preset.resuscitation
    if r is not None and r.model is not None and r.model not in preset.models:
        raise UserError(f"{path}: resuscitation.model is {r.model!r}, which the preset does not have; "
                        f"its models are {', '.join(preset.models)}.")
    if r is not None:
        for ratio, factor in [(r.ratio, r.factor), *((p, 1.0) for p in r.ratios), *((r.ratio, q) for q in r.factors)]:
            try:
                check_recipe(ratio, factor)
            except UserError as error:
                raise UserError(f"{path}: resuscitation: {str(error).replace('--', '')}") from None
        if not all(t > 0 for t in r.temperatures):
            raise UserError(f"{path}: resuscitation.temperatures must be positive; got {r.temperatures}.")
