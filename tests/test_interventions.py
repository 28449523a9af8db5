"""ke.interventions against hand computations: the two bases of A and F, the recipe's intended C-bar and its
shares, the plan's defaults, and the entropy of a resuscitated checkpoint against a second code path."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import make_texts, save_tiny_model
from ke import interventions
from ke.config import ModelSpec, Preset
from ke.continual import summary
from ke.entropy import EntropySettings, load_coefficients, measure
from ke.errors import UserError
from ke.models import load_model
from ke.resuscitate import resuscitate


def curve_point(k, p):
    by_kind = {kind: {"K": k, "K_para": k, "K_once": k} for kind in ("memorization",)}
    return {"K": k, "K_para": k, "K_once": k, "K_by_kind": by_kind, "P": p, "tasks": {}}


def test_outcome_on_both_bases():
    original = summary([curve_point(-2.0, 60.0), curve_point(-1.5, 54.0)])
    modified = summary([curve_point(-2.5, 50.0), curve_point(-1.8, 51.0)])  # its own step 0 is the modified model
    out = interventions.outcome(modified, original)
    assert out["A"] == pytest.approx(100 * (-1.8 + 2.5) / 2.5)  # own basis: the modified model's step 0
    assert out["F"] == pytest.approx(-100 * (51.0 - 50.0) / 50.0)
    assert out["A_unmodified"] == pytest.approx(100 * (-1.8 + 2.0) / 2.0)  # the unmodified checkpoint's K_PT
    assert out["F_unmodified"] == pytest.approx(-100 * (51.0 - 60.0) / 60.0)
    assert (out["K"], out["P"], out["K_PT"], out["P_PT"]) == (-1.8, 51.0, -2.5, 50.0)
    alone = interventions.outcome(original)  # the original run: both bases coincide
    assert alone["A_unmodified"] == pytest.approx(alone["A"]) and alone["F_unmodified"] == pytest.approx(alone["F"])
    no_tasks = summary([curve_point(-2.0, None), curve_point(-1.5, None)])
    assert interventions.outcome(no_tasks, original)["F_unmodified"] is None


def hand_quantile(values, q):
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    return s[lo] + (pos - lo) * (s[min(lo + 1, len(s) - 1)] - s[lo])


@pytest.mark.parametrize("ratio,factor", [(0.5, 2.0), (0.9, 1.0), (0.3, 0.5)])
def test_intended_coefficients_and_effect_by_hand(ratio, factor):
    torch.manual_seed(0)
    cbar = torch.rand(3, 40) ** 3
    cbar[1, 5] = 0.0  # a dead slot: no finite multiplier reaches it, Algorithm 1 leaves it
    target = interventions.intended_coefficients(cbar, ratio, factor)
    effect = interventions.recipe_effect(cbar, ratio, factor)
    selected = raised = lowered = 0
    entropy_before = entropy_target = 0.0
    for l, row in enumerate(cbar.double().tolist()):
        t, mean = hand_quantile(row, ratio), sum(row) / len(row)
        expected = [factor * mean if 0 < c <= t else c for c in row]
        assert target[l].tolist() == pytest.approx(expected, rel=1e-12)
        selected += sum(0 < c <= t for c in row)
        raised += sum(0 < c <= t and factor * mean > c for c in row)
        lowered += sum(0 < c <= t and factor * mean < c for c in row)
        for values, total in ((row, sum(row)), (expected, sum(expected))):
            h = -sum(v / total * math.log(v / total) for v in values if v > 0)
            if values is row:
                entropy_before += h
            else:
                entropy_target += h
    n = cbar.numel()
    assert effect["selected"] == pytest.approx(100 * selected / n)
    assert effect["raised"] == pytest.approx(100 * raised / n)
    assert effect["lowered"] == pytest.approx(100 * lowered / n)
    assert effect["entropy_before"] == pytest.approx(entropy_before, rel=1e-10)
    assert effect["entropy_intended"] == pytest.approx(entropy_target, rel=1e-10)
    if ratio == 0.9 and factor == 1.0:
        assert effect["lowered"] > 0  # p = 90% reaches past the mean: active slots are scaled down


def preset_for(run_folder, tmp_path, resuscitation=None, **extra) -> Preset:
    model = ModelSpec(key="olmo", family="olmo", label="tiny", source=str(run_folder))
    return Preset(name="t", run_dir=tmp_path / "runs", world=None, models={"olmo": model},
                  resuscitation=resuscitation or {}, **extra)


def test_plan_defaults_and_errors(tmp_path):
    run = tmp_path / "run"
    steps = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    for s in steps:
        (run / f"step{s}").mkdir(parents=True)
        (run / f"step{s}" / "config.json").write_text("{}")
    plan = interventions.plan(preset_for(run, tmp_path, entropy={}))
    assert (plan.model, plan.final) == ("olmo", 1000)
    assert plan.starts == [200, 500, 1000]  # the stages at ~20%, ~50% and 100% of the schedule
    assert plan.mids == [500, 700]  # mid and the checkpoint nearest 75% (700 and 800 tie: the first)
    assert (plan.ratio, plan.factor, plan.factors) == (0.5, 2.0, [0.5, 1.0, 2.0, 3.0])
    given = {"final": 900, "mids": [300, 600], "starts": [100, 900], "ratio": 0.3, "temperatures": [2.0]}
    plan = interventions.plan(preset_for(run, tmp_path, given, entropy={}))
    assert (plan.final, plan.mids, plan.starts, plan.ratio, plan.temperatures) == (900, [300, 600], [100, 900], 0.3,
                                                                                    [2.0])
    with pytest.raises(UserError, match="no checkpoint"):
        interventions.plan(preset_for(run, tmp_path, {"mids": [250]}, entropy={}))
    with pytest.raises(UserError, match="unknown field"):
        interventions.plan(preset_for(run, tmp_path, {"ration": 0.5}, entropy={}))


def test_resuscitated_entropy_against_a_second_path(tmp_path, tokenizer_dir):
    run = tmp_path / "run"
    save_tiny_model("olmo", tokenizer_dir, run / "step10", seed=1)
    docs = tmp_path / "dolma.txt"
    docs.write_text("\n".join(make_texts(12, seed=5)))
    entropy = {"corpora": {"dolma": str(docs)}, "max_docs": 12, "seq_len": 32, "batch_size": 4}
    preset = preset_for(run, tmp_path, entropy=entropy)
    record = interventions.resuscitated_entropy(preset, "olmo", 10, 0.5, 2.0)
    out_dir = tmp_path / "runs" / "entropy" / "olmo" / "step10-resuscitated-p0.5-q2" / "dolma"
    assert json.loads((out_dir / "entropy.json").read_text())["knowledge_entropy"] == record["knowledge_entropy"]

    # second path: measure, apply Algorithm 1 by hand to a fresh copy, measure again
    loaded = load_model(str(run / "step10"))
    settings = EntropySettings(seq_len=32, batch_size=4)
    before = measure(loaded.model, loaded.tokenizer, make_texts(12, seed=5), settings, progress=False)
    resuscitate(loaded.model, before.mean_abs_coefficients, 0.5, 2.0)
    after = measure(loaded.model, loaded.tokenizer, make_texts(12, seed=5), settings, progress=False)
    assert record["knowledge_entropy"] == pytest.approx(after.knowledge_entropy, rel=1e-5)
    # the first layer sees unchanged inputs, so it lands exactly where Algorithm 1 aims
    intended = interventions.intended_coefficients(before.mean_abs_coefficients, 0.5, 2.0)
    torch.testing.assert_close(load_coefficients(out_dir)[0].double(), intended[0], rtol=1e-4, atol=1e-7)
    assert interventions.resuscitated_entropy(preset, "olmo", 10, 0.5, 2.0) == record  # cached


def test_verdict():
    assert interventions.verdict([True, True]) == "yes"
    assert interventions.verdict([True, False, False]) == "partly (1 of 3)"
    assert interventions.verdict([False]) == "**no**"
    assert interventions.verdict([]) == "n/a"
