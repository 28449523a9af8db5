"""What `ke plan` prints: a Plan (ke.book.items) as YAML, with the numbers its configurations amount to
(warmup and injection steps, tokens, tokens per non-embedding parameter, weight-decay e-folds) and a count of
its work items.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..continual import ContinualConfig
from ..miniature.pretrain import PretrainConfig
from .items import Plan, Resuscitation


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
    return {"total_steps": config.total_steps, "warmup_steps": config.warmup_steps,
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
        "resuscitated_checkpoints": [{"checkpoint": r.checkpoint.tag, "ratio": r.variant.ratio, "factor": r.variant.factor,
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
