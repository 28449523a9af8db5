"""The regime numbers and the regime study: S and tokens per parameter against hand computations, the sweep plan
a preset resolves into, bootstrap intervals of the entropy, determinism of a sweep run, bad sweep parameters, and
the chapter's decay verdicts on series with a known answer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from ke.book import chapter_regime as R
from ke.book import claims as C
from ke.book.execute import execute
from ke.book.plan import make_plan
from ke.book.presets import load_preset, project_root
from ke.entropy import bootstrap_entropy, entropy_of
from ke.errors import UserError
from ke.miniature.pretrain import PretrainConfig, non_embedding_count
from ke.train import Schedule, regime


def test_regime_numbers_of_a_small_schedule_by_hand():
    s = Schedule(peak=0.01, total_steps=4, warmup_steps=2, floor=0.1)
    # warmup 0, 0.5 (steps 0, 1), then cosine from 1 at step 2 to 0.1 at step 4: 1 at 2, 0.55 at 3, 0.1 at 4
    lrs = [0.01 * 0.5, 0.01 * 1.0, 0.01 * 0.55, 0.01 * 0.1]   # updates 1..4
    assert [s.lr(t) for t in (1, 2, 3, 4)] == pytest.approx(lrs)
    r = regime(s, weight_decay=0.5, tokens_per_step=100, non_embedding_params=40, corpus_tokens=200)
    assert r["weight_decay_efolds"] == pytest.approx(0.5 * sum(lrs))
    assert (r["tokens"], r["tokens_per_parameter"], r["epochs"]) == (400, 10.0, 2.0)
    assert regime(s, weight_decay=0.5, tokens_per_step=100, non_embedding_params=40, step=2)["weight_decay_efolds"] == \
        pytest.approx(0.5 * sum(lrs[:2]))
    linear = Schedule(peak=1.0, total_steps=3, shape="linear", floor=0.1)
    assert [linear.factor(t) for t in (0, 1, 2, 3)] == pytest.approx([1.0, 0.7, 0.4, 0.1])
    assert Schedule(peak=1.0, total_steps=3, warmup_steps=1, shape="constant").summed_lr() == 3.0
    with pytest.raises(UserError, match="schedule must be one of"):
        Schedule(peak=1.0, total_steps=3, shape="exponential")


def test_regime_targets_resolve_to_steps_warmup_and_weight_decay():
    cfg = PretrainConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=64, seq_len=8, batch_size=4,
                         lr=0.01, tokens_per_parameter=3, warmup_fraction=0.1, weight_decay_efolds=2.0)
    n = 2 * (4 * 16 * 16 + 3 * 16 * 64)  # attention q, k, v, o and SwiGLU gate, up, down; OLMo's norms hold no weights
    assert non_embedding_count(cfg) == n
    r = cfg.resolved()
    assert r.steps == round(3 * n / 32) and r.warmup_steps == round(0.1 * r.steps)
    assert r.weight_decay * r.schedule.summed_lr() == pytest.approx(2.0)
    assert (r.tokens_per_parameter, r.weight_decay_efolds, r.warmup_fraction) == (None, None, None)
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    non_embedding_count(cfg)  # counting builds a model: it must leave the random generator alone
    assert torch.rand(1) == before
    with pytest.raises(UserError, match="weight-decay-efolds"):
        PretrainConfig(weight_decay_efolds=-1).resolved()


def tiny_preset(tmp_path, **regime_section) -> str:
    spec = yaml.safe_load((project_root() / "parameters" / "smoke.yaml").read_text())
    spec["name"], spec["run_dir"] = "tiny-regime", str(tmp_path / "runs")
    spec["regime"] = regime_section
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_sweep_plan_from_a_preset(tmp_path):
    plan = make_plan(load_preset(tiny_preset(tmp_path, sweeps={"decay": [{"weight_decay_efolds": 0}],
                                                               "width": [{"hidden_size": 16, "intermediate_size": 32}]},
                                             seeded=["decay"], bootstrap=50), project_root()))
    cells = {(c.sweep, c.cell): c for c in plan.regime}
    assert set(cells) == {("decay", "base"), ("decay", "weight_decay_efolds=0"), ("width", "base"),
                          ("width", "hidden_size=16, intermediate_size=32")}
    base = plan.checkpoints[("olmo", 0)]
    assert cells[("decay", "base")].runs == {0: base, 1: plan.checkpoints[("olmo", 1)]}  # the zoo's runs, reused
    assert set(cells[("decay", "weight_decay_efolds=0")].runs) == {0, 1}   # seeded: every seed
    assert set(cells[("width", "hidden_size=16, intermediate_size=32")].runs) == {0}
    wide = cells[("width", "hidden_size=16, intermediate_size=32")].config
    zoo = load_preset(tiny_preset(tmp_path), project_root()).models["olmo"].pretrain
    assert wide.steps == zoo.steps and wide.weight_decay == zoo.weight_decay  # same tokens, same decay
    assert cells[("decay", "weight_decay_efolds=0")].config.weight_decay == 0.0
    regime_runs = [r for r in plan.pretraining if r.model.startswith("regime/")]
    assert len(regime_runs) == 3  # S = 0 with two seeds, the narrow model with one
    for cell in plan.regime:
        for refs in cell.runs.values():
            for ref in refs:
                for role in ("dolma", "dolma_skip_first"):
                    m = plan.measurement(ref, role)
                    assert m.bootstrap == (50 if role == "dolma" else 0) and m.settings.skip_first == (role != "dolma")


def test_a_centre_keeps_the_study_at_its_length_and_a_cell_equal_to_the_base_reuses_the_zoo(tmp_path):
    """regime.center: the cells change the base's configuration at the centre's length, not the zoo run's; the
    centre's runs are shared by every sweep; a cell that lands on the base's configuration reuses its runs."""
    zoo = load_preset(tiny_preset(tmp_path), project_root()).models["olmo"].pretrain   # 40 steps
    plan = make_plan(load_preset(tiny_preset(tmp_path, center={"steps": 20, "save_steps": [0, 10, 20], "seeds": 1},
                                             sweeps={"decay": [{"weight_decay_efolds": 0}],
                                                     "length": [{"steps": zoo.steps, "save_steps": zoo.save_steps}]}),
                                 project_root()))
    cells = {(c.sweep, c.cell): c for c in plan.regime}
    assert cells[("decay", "base")].config.steps == cells[("decay", "weight_decay_efolds=0")].config.steps == 20
    assert cells[("decay", "base")].runs == cells[("length", "base")].runs and set(cells[("decay", "base")].runs) == {0}
    assert all(ref.model == "regime/base" for ref in cells[("decay", "base")].runs[0])
    reused = next(c for c in plan.regime if c.sweep == "length" and c.cell != "base").runs
    assert reused == {seed: plan.checkpoints[("olmo", seed)] for seed in (0, 1)}   # every seed of the zoo, no run
    names = [r.model for r in plan.pretraining]
    assert names.count("regime/base") == 1 and not any(n.startswith("regime/length") for n in names)
    with pytest.raises(UserError, match="regime.center overrides unknown field 'lenght'"):
        make_plan(load_preset(tiny_preset(tmp_path, center={"lenght": 3}), project_root()))


def test_the_books_cells_outside_the_length_sweep_see_as_many_tokens_as_the_centre():
    """A cell keeps the centre's steps: one that changes the batch must restate the length, or it would change two
    things (the default's batch cell once saw half the tokens)."""
    for name in ("default", "regime"):
        plan = make_plan(load_preset(name))
        tokens = lambda c: c.config.steps * c.config.batch_size * c.config.seq_len
        centre = tokens(next(c for c in plan.regime if c.cell == "base"))
        for cell in plan.regime:
            if cell.sweep != "length":
                assert tokens(cell) == pytest.approx(centre, rel=0.01), (name, cell.sweep, cell.cell)


@pytest.mark.parametrize("section,message", [
    ({"sweeps": {"decay": [{"weight_decay": 1, "wd": 2}]}}, "overrides unknown field 'wd'"),
    ({"sweeps": {"decay": [{}]}}, "changes nothing"),
    ({"sweeps": {"decay": [{"lr": 0.1}]}, "seeded": ["width"]}, "regime.seeded names 'width'"),
    ({"base": "pythia2"}, "regime.base is 'pythia2'"),
    ({"sweeps": {"decay": [{"weight_decay_efolds": -1}]}}, "weight-decay-efolds must be a non-negative"),
])
def test_bad_sweep_parameters_are_one_sentence_errors(tmp_path, section, message):
    with pytest.raises(UserError, match=message) as error:
        make_plan(load_preset(tiny_preset(tmp_path, **section), project_root()))
    assert "\n" not in str(error.value)


def test_a_sweep_run_is_deterministic_for_its_seed(tmp_path):
    """The same cell planned into two run folders trains to bit-identical weights."""
    from safetensors.torch import load_file
    weights = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        plan = make_plan(load_preset(tiny_preset(folder, sweeps={"decay": [{"weight_decay_efolds": 0}]}),
                                     project_root()))
        execute(plan.world)
        run = next(r for r in plan.pretraining if r.model.startswith("regime/") and r.seed == 0)
        execute(run)
        weights.append(load_file(str(run.out_dir / f"step{run.config.steps}" / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_bootstrap_of_the_entropy_covers_the_full_sample_and_narrows_with_more_documents():
    rng = np.random.default_rng(0)
    small = torch.from_numpy(rng.gamma(2.0, size=(40, 2, 16)))
    large = torch.from_numpy(rng.gamma(2.0, size=(640, 2, 16)))
    out_small, out_large = bootstrap_entropy(small, draws=400), bootstrap_entropy(large, draws=400)
    for per_doc, out in ((small, out_small), (large, out_large)):
        full = float(entropy_of(per_doc.mean(0)).sum())
        low, high = out["knowledge_entropy"]
        assert low <= full <= high
        assert len(out["layer_entropy"]) == 2 and out["documents"] == per_doc.shape[0]
    width = lambda o: o["knowledge_entropy"][1] - o["knowledge_entropy"][0]  # noqa: E731
    assert width(out_large) < width(out_small) / 2  # 16 times the documents: about a quarter of the width


def rows(values, lows=None, highs=None):
    """A run's rows with entropy `values` at equally spaced checkpoints 0 .. 100%."""
    n = len(values)
    return [{"step": i, "fraction": i / (n - 1), "entropy": v, "low": v - (lows or 0.01), "high": v + (highs or 0.01),
             "maximum": 10.0, "entropy_skip_first": v} for i, v in enumerate(values)]


def test_decay_verdicts_on_series_with_a_known_answer():
    assert R.decay(rows([9.0, 8.9, 8.8, 8.7, 8.6, 8.5]))["verdict"] == C.AGREES
    assert R.decay(rows([8.0, 8.1, 8.2, 8.3, 8.4, 8.5]))["verdict"] == C.DISAGREES
    small = R.decay(rows([9.0, 8.999, 8.998, 8.997, 8.996, 8.995]))  # monotone but inside the noise
    assert small["verdict"] == C.NOT_SIGNIFICANT and small["noise"] == pytest.approx(math.hypot(0.01, 0.01))
    d = R.decay(rows([9.0, 8.9, 8.8, 8.7, 8.6, 8.5]))
    assert d["from_step"] == 1 and d["drop"] == pytest.approx(0.4) and d["drop_percent"] == pytest.approx(4.0)


def test_conclusion_names_the_factor_that_switches_the_decay():
    summaries = {"decay": [{"cell": "base", "seeds": 3, "verdict": C.AGREES},
                           {"cell": "S=0", "seeds": 1, "verdict": C.NOT_SIGNIFICANT}],
                 "width": [{"cell": "base", "seeds": 3, "verdict": C.AGREES}, {"cell": "d=16", "seeds": 1,
                                                                                "verdict": C.AGREES}]}
    text = R.conclusion(summaries)
    assert "Changing **decay** alone turns a decay on or off" in text
    assert "shows no significant decay in S=0 (1 seed)" in text and "decays in base (3 seeds)" in text
    assert "No factor of these sweeps" in R.conclusion({"width": summaries["width"]})


def test_paper_regimes_from_the_published_recipes():
    by_role = {r["role"]: r for r in R.paper_regimes()}
    assert by_role["olmo-1b"]["tokens_per_parameter"] == pytest.approx(739_328 * 2048 * 2048 / 1_073_741_824)
    assert by_role["olmo-1b"]["weight_decay_efolds"] == pytest.approx(16.3, abs=0.1)
    assert by_role["olmo-7b"]["weight_decay_efolds"] == pytest.approx(9.2, abs=0.1)
    assert by_role["pythia-1.4b"]["weight_decay_efolds"] == pytest.approx(1.57, abs=0.02)


def test_the_regime_preset_is_the_default_book_with_a_wider_sweep():
    """parameters/regime.yaml shares runs/default, so every other section must stay the default's: a section that
    drifted would make the two presets overwrite each other's artifacts with different configurations."""
    default, full = load_preset("default"), load_preset("regime")
    assert full.run_dir == default.run_dir
    for section in ("world", "vocab_size", "models", "entropy", "continual", "resuscitation"):
        assert getattr(full, section) == getattr(default, section), section
    assert set(default.regime.sweeps) <= set(full.regime.sweeps)
    plans = {name: make_plan(load_preset(name)) for name in ("default", "regime")}
    cells = {name: {(c.sweep, c.cell): set(c.runs) for c in plan.regime} for name, plan in plans.items()}
    assert all(seeds <= cells["regime"][key] for key, seeds in cells["default"].items())  # a superset, cell by cell
    assert all(len(seeds) == 3 for seeds in cells["regime"].values())


def test_cell_claims_count_the_base_once_and_a_selected_base_is_never_agreement():
    from ke.stats import spread
    cell = lambda name, verdict, zoo=False: {"cell": name, "drop": spread([0.1, 0.2]), "noise": 0.01,
                                             "verdict": verdict, "zoo": zoo}
    summaries = {"decay": [cell("base", C.AGREES), cell("S=0", C.DISAGREES)],
                 "width": [cell("base", C.AGREES), cell("d=16", C.AGREES)],
                 "length": [cell("base", C.AGREES), cell("tpp=100", C.AGREES, zoo=True)]}   # the zoo's runs
    rows = R.cell_claims(summaries)
    assert [r.statement for r in rows] == ["base", "S=0", "d=16", "tpp=100"] and rows[0].verdict == C.AGREES
    rows = R.cell_claims(summaries, selected=True)
    assert [r.verdict for r in rows] == [C.SELECTED, C.DISAGREES, C.AGREES, C.SELECTED]
