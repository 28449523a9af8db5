"""Presets: plain YAML files in parameters/, loaded into one dataclass per run of the book."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .errors import UserError

SECTIONS = ("world", "models", "entropy", "continual", "resuscitation")


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) that holds parameters/."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "parameters").is_dir():
            return folder
    raise UserError(f"no parameters/ folder at or above {here}; run from the project checkout.")


@dataclass
class ModelSpec:
    """One model family of a preset: trained here ("zoo") or read from a hub repo / local run folder."""

    key: str
    family: str  # olmo | gpt_neox
    label: str  # what the figures call it, e.g. "OLMo (1B role)"
    source: str = "zoo"
    steps: list[int] | None = None  # checkpoints to analyse; None: every checkpoint of the run
    final_step: int | None = None  # the "100%" of the pretraining schedule
    stages: dict = field(default_factory=dict)  # stage name -> step, e.g. {initial: 300, mid: 750, final: 1500}
    pretrain: dict = field(default_factory=dict)  # ke.pretrain.PretrainConfig fields for zoo models
    dtype: str = "float32"

    @property
    def is_zoo(self) -> bool:
        return self.source == "zoo"


@dataclass
class Preset:
    name: str
    run_dir: Path
    world: dict | None
    models: dict[str, ModelSpec]
    entropy: dict
    continual: dict = field(default_factory=dict)
    resuscitation: dict = field(default_factory=dict)
    root: Path = Path(".")
    source: Path | None = None  # the YAML file it was read from

    @property
    def zoo_dir(self) -> Path:
        return self.run_dir / "zoo"

    @property
    def world_dir(self) -> Path:
        return self.zoo_dir / "world"

    def model_source(self, key: str) -> str:
        spec = self.models[key]
        return str(self.zoo_dir / key) if spec.is_zoo else spec.source

    def resolve(self, spec: str) -> str:
        """A data spec of the preset: "world:<path>" is a path inside the generated world, anything else as is."""
        return str(self.world_dir / spec[len("world:"):]) if spec.startswith("world:") else spec

    def corpus(self, role: str) -> str:
        """Data spec of an entropy corpus role (dolma, pubmed, c4)."""
        return self.resolve(self.entropy["corpora"][role])


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_preset(name: str = "default", root: Path | None = None, **overrides) -> Preset:
    """Read parameters/<name>.yaml (or a YAML path), then apply section overrides (None means 'keep')."""
    root = project_root(root)
    path = Path(name) if name.endswith((".yaml", ".yml")) else root / "parameters" / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (root / "parameters").glob("*.yaml")))
        raise UserError(f"preset {name!r} does not exist; choose one of {known} or pass a YAML file.")
    raw = yaml.safe_load(path.read_text())
    unknown = set(overrides) - set(SECTIONS) - {"run_dir"}
    if unknown:
        raise UserError(f"unknown preset section(s) {sorted(unknown)}; the sections are {', '.join(SECTIONS)}.")
    for key, value in overrides.items():
        if value is not None:
            raw[key] = _merge(raw.get(key) or {}, value) if isinstance(value, dict) else value
    spec_fields = {f.name for f in fields(ModelSpec)}
    models = {}
    for key, spec in raw["models"].items():
        bad = set(spec) - spec_fields
        if bad:
            raise UserError(f"model {key!r} in preset {name!r} has unknown field(s) {sorted(bad)}.")
        models[key] = ModelSpec(key=key, **spec)
    run_dir = Path(raw.get("run_dir") or f"runs/{raw['name']}")
    return Preset(name=raw["name"], run_dir=run_dir if run_dir.is_absolute() else root / run_dir,
                  world=raw.get("world"), models=models, entropy=raw["entropy"],
                  continual=raw.get("continual") or {}, resuscitation=raw.get("resuscitation") or {}, root=root,
                  source=path)
