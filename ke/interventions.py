"""Resuscitation experiments as the chapter uses them (paper Section 5, App. B.6-B.8): the plan read from the
preset, one outcome record per continual-learning run (A and F on two bases), what a recipe does to C-bar, the
entropy of a resuscitated checkpoint, and the paper's claims.

Two bases for A and F (the paper does not say which it used, DIGEST Fig. 5 notes):
- "own": relative to the run's own step-0 evaluation, i.e. of the *modified* model (the official code's
  `eval_on_load` evaluates the loaded, resuscitated checkpoint);
- "unmodified": relative to K_PT / P_PT of the unmodified checkpoint (the original run from the same start).
On the unmodified basis all runs from one start share the denominator, so A and F order the runs exactly as
the end performances K_CL and P_CL do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import Preset
from .entropy import EntropySettings, entropy_of
from .errors import UserError
from .metrics import acquisition, forgetting




@dataclass
class ResuscitationPlan:
    """The runs of the chapter, from the preset's `resuscitation` section (defaults: the paper's grid, shaped to
    the model's checkpoints)."""

    model: str
    final: int                  # Figs. 1, 5, 15, 18
    mids: list[int]             # Fig. 17 (the paper: 369k and 554k)
    starts: list[int]           # Fig. 16
    ratio: float = 0.5          # p of Figs. 5, 16, 17
    factor: float = 2.0         # q of Figs. 1, 16 and Fig. 18's FFN reference
    factors: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0])       # q of Figs. 5, 17
    ratios: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])   # p of Fig. 15 (q = 1)
    temperatures: list[float] = field(default_factory=lambda: [1.5, 2.0, 2.5, 3.0])  # Fig. 18


def plan(preset: Preset) -> ResuscitationPlan:
    """Read preset.resuscitation; a missing field falls back to the paper's value or the model's stages."""
    from .zoo import checkpoints, final_step, stage_steps

    section = dict(preset.resuscitation or {})
    unknown = set(section) - set(ResuscitationPlan.__dataclass_fields__)
    if unknown:
        raise UserError(f"unknown field(s) {sorted(unknown)} in the resuscitation section of preset {preset.name!r}; "
                        f"the fields are {', '.join(ResuscitationPlan.__dataclass_fields__)}.")
    model = section.pop("model", "olmo" if "olmo" in preset.models else next(iter(preset.models)))
    if model not in preset.models:
        raise UserError(f"resuscitation.model {model!r} is not a model of preset {preset.name!r}; "
                        f"choose one of {', '.join(preset.models)}.")
    steps = [c.step for c in checkpoints(preset, model)]
    final = section.pop("final", final_step(preset, model))
    nearest = lambda fraction: min(steps, key=lambda s: abs(s - fraction * final))  # noqa: E731
    stages = stage_steps(preset, model)
    starts = section.pop("starts", (preset.continual.get("starts") or {}).get(model) or sorted(set(stages.values())))
    mids = section.pop("mids", [stages["mid"], nearest(0.75)])
    result = ResuscitationPlan(model=model, final=final, mids=list(mids), starts=list(starts), **section)
    for name in ("final", "mids", "starts"):
        value = getattr(result, name)
        missing = [s for s in (value if isinstance(value, list) else [value]) if s not in steps]
        if missing:
            raise UserError(f"resuscitation.{name} names step(s) {missing} that model {model!r} has no checkpoint "
                            f"for; it has {steps}.")
    return result


def planned_runs(preset: Preset) -> list[tuple[str, dict]]:
    """The runs the resuscitation chapter reads, as (function of ke.experiments, keyword arguments); see
    ke.experiments.planned_runs."""
    p = plan(preset)
    recipes = ({(p.final, p.ratio, f) for f in p.factors}                 # Fig. 5
               | {(p.final, r, 1.0) for r in p.ratios}                     # Fig. 15
               | {(s, p.ratio, p.factor) for s in {*p.starts, p.final}}    # Figs. 1, 16, 18
               | {(m, p.ratio, f) for m in p.mids for f in p.factors})     # Fig. 17
    runs = [("run_continual", {"key": p.model, "step": s}) for s in sorted({p.final, *p.mids, *p.starts})]
    runs += [("run_resuscitated", {"key": p.model, "step": s, "ratio": r, "factor": f}) for s, r, f in sorted(recipes)]
    runs += [("run_continual", {"key": p.model, "step": p.final, "temperature": t, "tag": f"temperature{t:g}"})
             for t in p.temperatures]
    return runs


def outcome(result: dict, original: dict | None = None) -> dict:
    """A, F (own basis), K = K_CL, P = P_CL of a continual-learning result.json; with `original` (the run of the
    unmodified checkpoint from the same start) also A_unmodified and F_unmodified against its K_PT and P_PT.
    Without `original` the run is taken to be the unmodified one, so both bases coincide. None stays None."""
    base = original or result

    def rel(function, end, start):
        return function(end, start) if end is not None and start else None

    return {"A": result["A"], "F": result["F"], "K": result["K_CL"], "P": result["P_CL"],
            "K_PT": result["K_PT"], "P_PT": result["P_PT"],
            "A_unmodified": rel(acquisition, result["K_CL"], base["K_PT"]),
            "F_unmodified": rel(forgetting, result["P_CL"], base["P_PT"])}


@torch.no_grad()
def intended_coefficients(cbar: torch.Tensor, ratio: float, factor: float) -> torch.Tensor:
    """The C-bar that Algorithm 1 aims at, per layer: every slot with 0 < C-bar <= the ratio-quantile becomes
    factor x the layer mean; the rest stay. Exact for a gated FFN's first layer; later layers also see the
    changed inputs, and a non-gated FFN's activation is not linear in the scaled pre-activation."""
    c = torch.as_tensor(cbar).double()
    threshold = torch.quantile(c, ratio, dim=-1, keepdim=True)
    selected = (c <= threshold) & (c > 0)
    return torch.where(selected, factor * c.mean(-1, keepdim=True), c)


def recipe_effect(cbar: torch.Tensor, ratio: float, factor: float) -> dict:
    """What one recipe does to C-bar [layers, ffn_dim]: shares (%) of slots selected, raised and lowered (a slot
    above factor x mean is scaled down), and the knowledge entropy before and as intended."""
    c = torch.as_tensor(cbar).double()
    target = intended_coefficients(c, ratio, factor)
    selected = (c <= torch.quantile(c, ratio, dim=-1, keepdim=True)) & (c > 0)
    return {"ratio": ratio, "factor": factor, "selected": 100 * float(selected.double().mean()),
            "raised": 100 * float((selected & (target > c)).double().mean()),
            "lowered": 100 * float((selected & (target < c)).double().mean()),
            "entropy_before": float(entropy_of(c).sum()), "entropy_intended": float(entropy_of(target).sum())}


def resuscitated_entropy(preset: Preset, key: str, step: int, ratio: float, factor: float,
                         progress: bool = False) -> dict:
    """Knowledge entropy of checkpoint `step` after Algorithm 1, measured on the Dolma role with the same settings
    as the original checkpoints (ke.analysis.measure_checkpoint); cached under runs/<preset>/entropy/."""
    from .entropy import run_entropy
    from .experiments import resuscitated
    from .models import resolve_checkpoint

    folder = resuscitated(preset, key, step, ratio, factor)
    checkpoint = resolve_checkpoint(preset.model_source(key), step)
    cfg = preset.entropy
    settings = EntropySettings(seq_len=cfg["seq_len"], batch_size=cfg["batch_size"], attention=True, ntp=True,
                               relu=True)
    out_dir = preset.run_dir / "entropy" / key / f"{checkpoint.name}-resuscitated-p{ratio:g}-q{factor:g}" / "dolma"
    return run_entropy(str(folder), preset.corpus("dolma"), out_dir, max_docs=cfg["max_docs"], settings=settings,
                       dtype=preset.models[key].dtype, device=cfg.get("device", "cpu"), progress=progress)


def original_run(preset: Preset, key: str, step: int) -> dict:
    """Outcome of the baseline continual-learning run from the unmodified checkpoint (cached)."""
    from .experiments import run_continual
    return outcome(run_continual(preset, key, step))


def ffn_run(preset: Preset, key: str, step: int, ratio: float, factor: float) -> dict:
    """Outcome of the baseline run from the resuscitated checkpoint, on both bases (cached)."""
    from .experiments import run_continual, run_resuscitated
    return outcome(run_resuscitated(preset, key, step, ratio, factor), run_continual(preset, key, step))


def temperature_run(preset: Preset, key: str, step: int, temperature: float) -> dict:
    """Outcome of the baseline run with attention temperature T decaying linearly to 1, on both bases (cached)."""
    from .experiments import run_continual
    return outcome(run_continual(preset, key, step, temperature=temperature, tag=f"temperature{temperature:g}"),
                   run_continual(preset, key, step))


def verdict(flags: list[bool]) -> str:
    """'yes' when every check holds, 'partly (k of n)' when some do, '**no**' when none; 'n/a' without checks."""
    flags = [bool(f) for f in flags]
    if not flags:
        return "n/a"
    if all(flags):
        return "yes"
    return f"partly ({sum(flags)} of {len(flags)})" if any(flags) else "**no**"
