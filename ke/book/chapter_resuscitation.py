"""Chapter "Resuscitation" (paper Section 5, App. B.6-B.8): outcomes of the plan's resuscitation and
attention-temperature runs, what a recipe does to C-bar, and the paper's claims.

Two bases for A and F (the paper does not say which it used):
- "own": relative to the run's own step-0 evaluation, i.e. of the *modified* model (the official code's
  `eval_on_load` evaluates the loaded, resuscitated checkpoint);
- "unmodified": relative to K_PT / P_PT of the unmodified checkpoint (the original run from the same start).
On the unmodified basis all runs from one start share the denominator, so A and F order the runs exactly as the
end performances K_CL and P_CL do.
"""
from __future__ import annotations

import torch

from ..entropy import entropy_of
from ..metrics import acquisition, forgetting
from ..resuscitate import select_slots
from . import claims as C, paper
from .execute import execute
from .items import Plan, ResuscitationVariant, temperature_tag

BASES = {"own step 0": "own", "unmodified θ_PT": "unmodified"}


def outcome(result: dict, original: dict | None = None) -> dict:
    """A, F (own basis), K = K_CL, P = P_CL of a continual-learning result; with `original` (the run of the
    unmodified checkpoint from the same start) also A_unmodified and F_unmodified against its K_PT and P_PT."""
    base = original or result

    def rel(function, end, start):
        return function(end, start) if end is not None and start else None

    return {"A": result["A"], "F": result["F"], "K": result["K_CL"], "P": result["P_CL"],
            "K_PT": result["K_PT"], "P_PT": result["P_PT"],
            "A_unmodified": rel(acquisition, result["K_CL"], base["K_PT"]),
            "F_unmodified": rel(forgetting, result["P_CL"], base["P_PT"])}


class Runs:
    """The chapter's runs of one model, read through the plan (each computed once, then cached)."""

    def __init__(self, plan: Plan):
        self.plan, self.grid = plan, plan.resuscitation
        self.model = self.grid["model"] if self.grid else None

    def missing_markdown(self) -> str:
        """One sentence when the preset has no resuscitation section (then the page shows nothing else)."""
        return "" if self.grid else (f"*Preset {self.plan.preset} has no resuscitation section: it runs no "
                                     "resuscitated or attention-temperature checkpoints, so this chapter has "
                                     "nothing to show.*")

    def original(self, step: int) -> dict:
        return outcome(execute(self.plan.run(self.model, step)))

    def ffn(self, step: int, ratio: float, factor: float) -> dict:
        variant = ResuscitationVariant(ratio, factor).tag
        return outcome(execute(self.plan.run(self.model, step, intervention=variant)),
                       execute(self.plan.run(self.model, step)))

    def temperature(self, step: int, t: float) -> dict:
        return outcome(execute(self.plan.run(self.model, step, intervention=temperature_tag(t))),
                       execute(self.plan.run(self.model, step)))

    def entropy(self, step: int, ratio: float, factor: float) -> float:
        """Knowledge entropy of the resuscitated checkpoint, measured like the original checkpoints."""
        return execute(self.plan.measurement(self.plan.resuscitated(self.model, step, ratio, factor)))[
            "knowledge_entropy"]

    def items_cut(self) -> int:
        result = execute(self.plan.run(self.model, self.grid["final"]))
        return result.get("provenance", {}).get("items_longer_than_seq_len", 0)


@torch.no_grad()
def intended_coefficients(cbar: torch.Tensor, ratio: float, factor: float) -> torch.Tensor:
    """The C-bar that Algorithm 1 aims at, per layer: every slot with 0 < C-bar <= the ratio-quantile becomes
    factor x the layer mean; the rest stay. Exact for a gated FFN's first layer; later layers also see the
    changed inputs, and a non-gated FFN's activation is not linear in the scaled pre-activation."""
    c = torch.as_tensor(cbar).double()
    return torch.where(select_slots(c, ratio)[2], factor * c.mean(-1, keepdim=True), c)


def recipe_effect(cbar: torch.Tensor, ratio: float, factor: float) -> dict:
    """What one recipe does to C-bar [layers, ffn_dim]: shares (%) of slots selected, raised and lowered (a slot
    above factor x mean is scaled down), and the knowledge entropy before and as intended."""
    c = torch.as_tensor(cbar).double()
    target = intended_coefficients(c, ratio, factor)
    selected = select_slots(c, ratio)[2]
    return {"ratio": ratio, "factor": factor, "selected": 100 * float(selected.double().mean()),
            "raised": 100 * float((selected & (target > c)).double().mean()),
            "lowered": 100 * float((selected & (target < c)).double().mean()),
            "entropy_before": float(entropy_of(c).sum()), "entropy_intended": float(entropy_of(target).sum())}


# ----------------------------------------------------------------------------------------------- comparing runs

def value(run: dict, metric: str, basis: str = "own"):
    return run[f"{metric}_unmodified"] if basis == "unmodified" and metric in ("A", "F") else run[metric]


def gain(run: dict, reference: dict, metric: str, basis: str = "own") -> float | None:
    """Improvement of `run` over `reference` (positive = better: A, K, P up; F down); None if unmeasured."""
    a, b = value(run, metric, basis), value(reference, metric, basis)
    if a is None or b is None:
        return None
    return b - a if metric == "F" else a - b


def beats(pairs, metrics, basis: str = "own", sign: int = 1) -> list[bool]:
    """Flags "run beats reference" (sign 1) or "run is worse" (sign -1) over (run, reference) pairs and metrics."""
    return [sign * g > 0 for run, ref in pairs for m in metrics if (g := gain(run, ref, m, basis)) is not None]


def on_both_bases(check) -> str:
    """One verdict for a claim about A and F over the checks on both bases (`check(basis)` returns the flags on
    one basis): it agrees only if every check holds on both."""
    return C.checks([flag for basis in BASES.values() for flag in check(basis)])


def basis_claim(figure: str, statement: str, paper: str, ours: str, check) -> C.Claim:
    """A claim about A and F judged on both bases (on_both_bases), with the checks holding per basis in `ours`."""
    counts = "; ".join(f"{name}: {sum(f)} of {len(f)}" for name, basis in BASES.items() if (f := check(basis)))
    return C.Claim(figure, statement, paper, f"{ours} (checks holding — {counts})", on_both_bases(check))


def fmt(v, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


# ----------------------------------------------------------------------------------------------- claims and tables

def runs_table(rows: dict[str, tuple[float, dict]]) -> str:
    """Fig. 5's table: per run, its entropy, step-0 K and P, A and F on both bases, end K and P."""
    out = ("| run | entropy (nats) | K at step 0 | P at step 0 (%) | A own (%) | F own (%) | A vs unmodified (%) | "
           "F vs unmodified (%) | K after CL | P after CL (%) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    for name, (entropy, r) in rows.items():
        out += (f"| {name} | {entropy:.4f} | {r['K_PT']:.4f} | {fmt(r['P_PT'])} | {fmt(r['A'])} | {fmt(r['F'])} | "
                f"{fmt(r['A_unmodified'])} | {fmt(r['F_unmodified'])} | {r['K']:.4f} | {fmt(r['P'])} |\n")
    return out


def outcomes_table(rows: dict[str, dict]) -> str:
    out = "| run | K after CL | P after CL (%) | A own / unmodified | F own / unmodified |\n|---|---|---|---|---|\n"
    for name, r in rows.items():
        out += (f"| {name} | {r['K']:.4f} | {fmt(r['P'])} | {fmt(r['A'])} / {fmt(r['A_unmodified'])} | "
                f"{fmt(r['F'])} / {fmt(r['F_unmodified'])} |\n")
    return out


def ratio_table(rows: dict[float, tuple[dict, dict]]) -> str:
    """Fig. 15's table: what each p does to C-bar (selected / raised / lowered slots) and its outcome."""
    out = ("| p (%) | selected (%) | raised (%) | lowered (%) | entropy intended | A own / unmodified | "
           "F own / unmodified | K after CL | P after CL |\n|---|---|---|---|---|---|---|---|---|\n")
    for ratio, (e, r) in rows.items():
        out += (f"| {100 * ratio:g} | {e['selected']:.1f} | {e['raised']:.1f} | {e['lowered']:.1f} | "
                f"{e['entropy_intended']:.4f} | {fmt(r['A'])} / {fmt(r['A_unmodified'])} | "
                f"{fmt(r['F'])} / {fmt(r['F_unmodified'])} | {r['K']:.4f} | {fmt(r['P'])} |\n")
    return out


def ratio_claims(runs: dict[float, dict]) -> list[C.Claim]:
    """Fig. 15: p too high (90%) hurts; below 90%, a larger p helps."""
    ordered, out = sorted(runs), []
    if ordered[-1] >= 0.9 and len(ordered) > 1:
        top, rest = runs[ordered[-1]], [runs[r] for r in ordered[:-1]]

        def worse_than_every_lower(basis):   # per metric: is the top p worse than every lower p?
            per_metric = [[gain(top, r, m, basis) for r in rest] for m in "AF"]
            return [all(g < 0 for g in gs) for gs in per_metric if None not in gs]

        out.append(basis_claim("Fig. 15", f"p too high ({100 * ordered[-1]:g}%) hurts (worse A and F than every "
                               "lower p)", "yes", f"p = {100 * ordered[-1]:g}%: A {fmt(top['A'])}/"
                               f"{fmt(top['A_unmodified'])}, F {fmt(top['F'])}/{fmt(top['F_unmodified'])} (own/unmodified)",
                               worse_than_every_lower))
    lower = [r for r in ordered if r < 0.9]
    if len(lower) >= 2:
        big, small = runs[lower[-1]], runs[lower[0]]
        out.append(basis_claim("Fig. 15", f"below 90%, larger p helps (p = {100 * lower[-1]:g}% vs "
                               f"{100 * lower[0]:g}%)", "generally", f"A {fmt(small['A'])} → {fmt(big['A'])}, "
                               f"F {fmt(small['F'])} → {fmt(big['F'])} (own)",
                               lambda b: beats([(big, small)], "AF", b)))
    return out


def stages_table(runs: dict[int, dict], originals: dict[int, dict], final: int) -> str:
    out = ("| start | fraction of training | K orig → resuscitated | P orig → resuscitated (%) | A orig → own / unmodified"
           " | F orig → own / unmodified |\n|---|---|---|---|---|---|\n")
    for s, r in runs.items():
        o = originals[s]
        out += (f"| {s} | {s / final:.2f} | {o['K']:.4f} → {r['K']:.4f} | {fmt(o['P'])} → {fmt(r['P'])} | "
                f"{fmt(o['A'])} → {fmt(r['A'])} / {fmt(r['A_unmodified'])} | "
                f"{fmt(o['F'])} → {fmt(r['F'])} / {fmt(r['F_unmodified'])} |\n")
    return out


def stage_claims(runs: dict[int, dict], originals: dict[int, dict], final: int) -> list[C.Claim]:
    """Fig. 16: resuscitation hurts initial/mid starts, helps the final one, more so for later starts, and the
    resuscitated final model stays below the original mid-stage one."""
    starts = list(runs)
    early = [s for s in starts if s / final <= 0.5]
    gains = {m: [gain(runs[s], originals[s], m) for s in starts] for m in "KP"}
    mid = min([s for s in starts if s != final] or [final], key=lambda s: abs(s - 0.5 * final))

    def delta(s):
        return f"step {s}: ΔK {gain(runs[s], originals[s], 'K'):+.4f}, ΔP {fmt(gain(runs[s], originals[s], 'P'), '+.1f')}"

    return [
        C.Claim("Fig. 16", f"resuscitation lowers end K and P at initial/mid starts (steps {early})", "yes",
                "; ".join(delta(s) for s in early) or "no such start",
                C.checks(beats([(runs[s], originals[s]) for s in early], "KP", sign=-1))),
        C.Claim("Fig. 16", "resuscitation raises end K and P at the final start", "yes", delta(final),
                C.checks(beats([(runs[final], originals[final])], "KP"))),
        C.Claim("Fig. 16", "the benefit grows for later starts (last vs first start)", "yes",
                f"ΔK {gains['K'][0]:+.4f} → {gains['K'][-1]:+.4f}, ΔP {fmt(gains['P'][0], '+.1f')} → "
                f"{fmt(gains['P'][-1], '+.1f')}",
                C.checks([g[-1] > g[0] for g in gains.values() if None not in g] if len(starts) > 1 else [])),
        C.Claim("Fig. 16", f"resuscitated final still below the original mid start (step {mid})", "yes",
                f"K {runs[final]['K']:.4f} vs {originals[mid]['K']:.4f}, P {fmt(runs[final]['P'])} vs "
                f"{fmt(originals[mid]['P'])}", C.checks(beats([(runs[final], originals[mid])], "KP", sign=-1)))]


def mids_table(runs: dict[int, dict[float, dict]], originals: dict[int, dict]) -> str:
    out = "| start | q | K after CL | P after CL (%) | A own / unmodified | F own / unmodified |\n|---|---|---|---|---|---|\n"
    for s, by_q in runs.items():
        o = originals[s]
        out += f"| {s} | original | {o['K']:.4f} | {fmt(o['P'])} | {fmt(o['A'])} | {fmt(o['F'])} |\n"
        for f, r in by_q.items():
            out += (f"| {s} | {f:g} | {r['K']:.4f} | {fmt(r['P'])} | {fmt(r['A'])} / {fmt(r['A_unmodified'])} | "
                    f"{fmt(r['F'])} / {fmt(r['F_unmodified'])} |\n")
    return out


def mid_claims(runs: dict[int, dict[float, dict]], originals: dict[int, dict]) -> list[C.Claim]:
    """Fig. 17: resuscitation hurts at the first intermediate checkpoint (every q); at the second, a larger q gives
    higher end K and P."""
    first, second = list(runs)[0], list(runs)[-1]
    qs = sorted(runs[second])
    thousands = lambda i: paper.CHECKPOINTS_1B[i] // 1000  # the paper's two intermediate checkpoints
    low, high = runs[second][qs[0]], runs[second][qs[-1]]
    return [
        C.Claim("Fig. 17", f"resuscitation lowers end K and P at step {first} (every q)", f"yes ({thousands(1)}k)",
                ", ".join(f"q={f:g}: ΔK {gain(r, originals[first], 'K'):+.4f}, "
                          f"ΔP {fmt(gain(r, originals[first], 'P'), '+.1f')}" for f, r in runs[first].items()),
                C.checks(beats([(r, originals[first]) for r in runs[first].values()], "KP", sign=-1))),
        C.Claim("Fig. 17", f"at step {second}, larger q gives higher end K and P (q={qs[-1]:g} vs q={qs[0]:g})",
                f"yes ({thousands(2)}k)", f"K {low['K']:.4f} → {high['K']:.4f}, P {fmt(low['P'])} → {fmt(high['P'])}",
                C.checks(beats([(high, low)], "KP")))]


def temperature_claims(runs: dict[float, dict], ffn_run: dict) -> list[C.Claim]:
    """Fig. 18: FFN resuscitation beats every attention temperature on A, F, and end K and P."""
    pairs = [(ffn_run, r) for r in runs.values()]
    best_p = max((r["P"] for r in runs.values() if r["P"] is not None), default=None)
    return [
        basis_claim("Fig. 18", "FFN resuscitation acquires more than every attention temperature", "yes",
                    f"A {fmt(ffn_run['A'])} vs " + ", ".join(f"T={t:g}: {fmt(r['A'])}" for t, r in runs.items())
                    + " (own)", lambda b: beats(pairs, "A", b)),
        basis_claim("Fig. 18", "FFN resuscitation forgets less than every attention temperature", "generally",
                    f"F {fmt(ffn_run['F'])} vs " + ", ".join(f"T={t:g}: {fmt(r['F'])}" for t, r in runs.items())
                    + " (own)", lambda b: beats(pairs, "F", b)),
        C.Claim("Fig. 18", "FFN resuscitation ends with higher K and P than every temperature", "yes",
                f"K {ffn_run['K']:.4f} vs max {max(r['K'] for r in runs.values()):.4f}; P {fmt(ffn_run['P'])} vs "
                f"max {fmt(best_p)}", C.checks(beats(pairs, "KP")))]


def facts(claims: list[C.Claim]) -> dict:
    """What the README quotes from this chapter (ke.book.summary)."""
    star = next((c for c in claims if c.figure == "Fig. 1"), None)
    return {"title": "Resuscitation", "sentences": [f"Figure 1's star: {star.ours} — {star.verdict}."] if star else []}
