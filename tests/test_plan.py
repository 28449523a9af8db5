"""ke.book.presets, ke.book.plan (with its items, description and execution): a preset read into typed sections
(bad keys are one-sentence errors), resolved once into planned items, executed and read back by the chapters. A tiny
preset whose model is a local run folder (step0/, step10/) of tiny random OLMo models."""
from __future__ import annotations

import json
import math
import random
import types

import pytest
import torch
import yaml
from datasets import Dataset

from conftest import WORDS, make_texts, save_tiny_model
from ke.book import chapter_continual as cc
from ke.book import chapter_resuscitation as cr
from ke.book.chapter_entropy import coefficients, maximum
from ke.book.describe import describe
from ke.book.execute import execute
from ke.book.items import ContinualRun
from ke.book.paper import PAPER_MODELS
from ke.book.plan import from_initial_stage, make_plan
from ke.book.presets import load_preset, project_root
from ke.entropy import EntropySettings, load_coefficients, measure
from ke.downstream import write_local_task
from ke.errors import UserError
from ke.knowledge import FictionalKnowledge
from ke.metrics import entity_perplexity
from ke.models import load_model
from ke.resuscitate import resuscitate, select_slots

ENTITIES = ["red river", "north city", "blue company", "old university"]


def fact(a: str, b: str) -> dict:
    return {"train_context": f"the {a} people was born in {b} .",
            "paraphrases": [f"born in {b} , the {a} people ."] * 9,
            "mem_input": [f"the {a} people was born in"], "mem_target": [b], "gen_input": [f"the {a} people"],
            "gen_target": [f"was born in {b}"], "hard_gen_input": [f"born in {b} , the"], "hard_gen_target": [a]}


def document(rng: random.Random) -> tuple[str, list[str]]:
    """Filler words with two entities in it; the entities list names them."""
    names = rng.sample(ENTITIES, 2)
    words = [rng.choice(WORDS[:8]) for _ in range(rng.randint(4, 12))]
    words.insert(rng.randint(0, len(words)), names[0])
    words.insert(rng.randint(0, len(words)), names[1])
    return " ".join(words), names


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer_dir):
    """A preset YAML with its own run_dir, a local run folder of two tiny OLMo checkpoints, two corpora with an
    `entities` column, fictional knowledge and tasks."""
    root = tmp_path_factory.mktemp("plan")
    for step in (0, 10):
        save_tiny_model("olmo", tokenizer_dir, root / "olmo" / f"step{step}", seed=step)
    rng = random.Random(0)
    for name in ("pubmed", "c4"):
        docs = [document(rng) for _ in range(120)]
        Dataset.from_dict({"text": [d for d, _ in docs], "entities": [e for _, e in docs]}).save_to_disk(str(root / name))
    (root / "plain.txt").write_text("\n".join(make_texts(12, seed=5)))
    FictionalKnowledge([fact("red", "north"), fact("blue", "south")],
                       [fact("green", "east"), fact("old", "west")]).save(root / "knowledge")
    write_local_task(root / "tasks", "t", [{"context": "the river is", "choices": ["blue", "north city"], "answer": 0},
                                           {"context": "a company", "choices": ["works at", "red"], "answer": 1}])
    spec = {"name": "tiny", "run_dir": str(root / "run"),
            "models": {"olmo": {"role": "olmo-1b", "family": "olmo", "label": "tiny OLMo", "source": str(root / "olmo")}},
            "entropy": {"corpora": {"dolma": str(root / "plain.txt")}, "max_docs": 12, "seq_len": 32, "batch_size": 4},
            "continual": {"corpora": {"pubmed": str(root / "pubmed"), "c4": str(root / "c4")},
                          "knowledge": str(root / "knowledge"),
                          "tasks": {"names": ["t"], "include_path": str(root / "tasks")},
                          "starts": {"olmo": [10, 0]}, "table_starts": [0, 10], "entity_docs": 200,
                          "config": {"steps": 2, "batch_size": 4, "seq_len": 32, "lr": 1.0e-3, "injections": 2},
                          "settings": {"baseline": {}, "lr_x2.5": {"lr": 2.5e-3}, "batch_x16": {"batch_size": 8}}},
            "resuscitation": {"final": 10, "mids": [0, 10], "starts": [0, 10], "factors": [2.0], "ratios": [0.5],
                              "temperatures": [2.0]}}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return types.SimpleNamespace(root=root, yaml=path, spec=spec, model=root / "olmo" / "step10")


def plan_of(tiny, **overrides):
    return make_plan(load_preset(str(tiny.yaml), project_root(), **overrides))


def write_preset(tmp_path, spec) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


# ---------------------------------------------------------------- presets

def test_every_section_is_typed_and_bad_keys_are_one_sentence_errors(tiny, tmp_path):
    preset = load_preset(str(tiny.yaml), project_root())
    assert preset.continual.config.lr == 1e-3 and preset.continual.config.eval_batch_size == 16  # class default
    assert preset.models["olmo"].seeds == [0] and preset.primary == "olmo" and preset.by_role("olmo-7b") is None
    cases = [({"models": {"olmo": {**tiny.spec["models"]["olmo"], "stepz": [1]}}}, "models.olmo has unknown key 'stepz'"),
             ({"models": {"olmo": {"family": "olmo", "label": "x"}}}, "models.olmo lacks the required key 'role'"),
             ({"entropy": {**tiny.spec["entropy"], "max_docs": "many"}}, "entropy.max_docs must be int"),
             ({"continual": {**tiny.spec["continual"], "config": {"stepz": 3}}}, "continual.config has unknown key"),
             ({"continual": {**tiny.spec["continual"], "settings": {"baseline": {}, "x": {"lrr": 1}}}},
              "continual.settings.x overrides unknown field 'lrr'"),
             ({"models": {"olmo": {**tiny.spec["models"]["olmo"], "role": "gpt-5"}}}, "choose one of olmo-1b"),
             ({"wrold": {}}, "unknown section 'wrold'")]
    for change, message in cases:
        path = write_preset(tmp_path, {**tiny.spec, **change})
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
            load_preset(path, project_root())
        assert str(path) in str(error.value) or "section" in message  # the file is named


def test_every_preset_in_parameters_loads_and_plans_offline():
    root = project_root()
    for path in sorted((root / "parameters").glob("*.yaml")):
        preset = load_preset(path.stem, root)
        text = describe(make_plan(preset))
        assert preset.name == path.stem and "continual_runs" in text


# ---------------------------------------------------------------- the plan

def test_plan_lists_the_runs_the_chapters_read(tiny):
    plan = plan_of(tiny)
    runs = {(r.checkpoint.step, r.name) for r in plan.continual}
    expected = {(s, f"{name}-pubmed") for s in (0, 10) for name in ("baseline", "lr_x2.5", "batch_x16")}
    expected |= {(0, "baseline-c4"), (10, "baseline-c4"), (0, "baseline-pubmed-resuscitated-p0.5-q2"),  # Fig. 16
                 (10, "baseline-pubmed-resuscitated-p0.5-q2"), (10, "baseline-pubmed-resuscitated-p0.5-q1"),  # Fig. 15
                 (10, "baseline-pubmed-temperature2")}  # Fig. 18
    assert runs == expected
    by_name = {r.name: r for r in plan.continual if r.checkpoint.step == 10}
    assert by_name["lr_x2.5-pubmed"].config.lr == 2.5e-3 and by_name["batch_x16-pubmed"].config.batch_size == 8
    assert by_name["batch_x16-pubmed"].config.steps == 2  # the baseline's other fields still apply
    assert by_name["baseline-pubmed-temperature2"].config.attention_temperature == 2.0
    assert len({r.out_dir for r in plan.continual}) == len(plan.continual)
    roles = {m.corpus for m in plan.measurements}
    assert roles == {"dolma", "dolma_count_padding"}
    assert plan.stages["olmo"] == {"initial": 0, "mid": 0, "final": 10}  # nearest to 20%, 50%, 100% of step 10
    with pytest.raises(UserError, match="no item"):
        plan.run("olmo", 10, setting="nope")
    with pytest.raises(UserError, match="no checkpoint at step 5"):
        plan.checkpoint("olmo", 5)


def test_run_ids_keep_the_folder_names_and_find_every_planned_item():
    """RunId and ResuscitationVariant form each name once: the names (cached artifacts are keyed by them) equal the
    old rule's strings, formed here from the items' numbers, and the plan finds every item again by its parts."""
    plan = make_plan(load_preset("smoke", project_root()))
    names = set()
    for run in plan.continual:
        ref, t = run.checkpoint, run.config.attention_temperature
        old_tag = (f"resuscitated-p{run.start.variant.ratio:g}-q{run.start.variant.factor:g}" if run.start
                   else f"temperature{t:g}" if t != 1 else None)
        old_name = "-".join([run.id.setting, run.id.corpus] + ([old_tag] if old_tag else []))
        assert run.id.name == run.name == old_name and run.intervention == run.id.intervention == old_tag
        assert str(run.out_dir).endswith("/" + run.id.name)
        assert run.out_dir == plan.run_dir / "continual" / f"{ref.model}/seed{ref.seed}/step{ref.step}" / old_name
        assert plan.run(ref.model, ref.step, seed=ref.seed, setting=run.setting, corpus=run.corpus,
                        intervention=run.intervention) is run
        names.add(old_name)
    assert {"baseline-pubmed", "baseline-c4", "lr_x2.5-pubmed", "baseline-pubmed-resuscitated-p0.5-q2",
            "baseline-pubmed-resuscitated-p0.9-q1", "baseline-pubmed-temperature1.5",
            "baseline-pubmed-temperature3"} <= names
    assert len(plan.resuscitations) == 8
    for res in plan.resuscitations:
        ref, p, q = res.checkpoint, res.variant.ratio, res.variant.factor
        assert res.tag == f"{ref.model}/seed{ref.seed}/step{ref.step}/resuscitated-p{p:g}-q{q:g}"
        assert res.out_dir == plan.run_dir / "resuscitated" / ref.tag / f"p{p:g}-q{q:g}"
        assert plan.resuscitated(ref.model, ref.step, p, q) is res
        assert plan.run(ref.model, ref.step, intervention=res.variant.tag).start is res
    for m in plan.measurements:
        assert m.out_dir == plan.run_dir / "entropy" / m.checkpoint.tag / m.corpus
        assert plan.measurement(m.checkpoint, m.corpus) is m
        if m.corpus == "dolma_skip_first":      # a variant is found by its parts, never by a rebuilt string
            assert plan.measurement(m.checkpoint, "dolma", "skip_first") is m
    assert {m.corpus for m in plan.measurements} == {"dolma", "dolma_count_padding", "dolma_skip_first", "pubmed",
                                                     "c4"}
    with pytest.raises(UserError, match="no item"):
        plan.resuscitated("olmo", 40, 0.5, 7)


def test_resuscitation_grid_defaults_and_errors(tmp_path):
    run = tmp_path / "run"
    for s in range(0, 1001, 100):
        (run / f"step{s}").mkdir(parents=True)
        (run / f"step{s}" / "config.json").write_text("{}")
    (tmp_path / "k").mkdir()
    spec = {"name": "grid", "run_dir": str(tmp_path / "runs"),
            "models": {"m": {"role": "olmo-1b", "family": "olmo", "label": "m", "source": str(run)}},
            "entropy": {"corpora": {"dolma": "d.txt"}},
            "continual": {"corpora": {"pubmed": "p"}, "knowledge": str(tmp_path / "k"), "config": {"steps": 10}},
            "resuscitation": {}}
    plan = make_plan(load_preset(write_preset(tmp_path, spec), project_root()))
    grid = plan.resuscitation
    assert (grid["model"], grid["final"], grid["starts"], grid["mids"]) == ("m", 1000, [200, 500, 1000], [500, 700])
    assert (grid["ratio"], grid["factor"], grid["factors"]) == (0.5, 2.0, [0.5, 1.0, 2.0, 3.0])
    spec["resuscitation"] = {"mids": [250]}
    with pytest.raises(UserError, match="resuscitation.mids names step"):
        make_plan(load_preset(write_preset(tmp_path, spec), project_root()))


# ---------------------------------------------------------------- executing and reading back

@pytest.fixture
def fake_runs(tiny, monkeypatch):
    """Replace the training loop by a reader of result.json in the run's folder; record each call."""
    calls = []

    def fake(start, corpus, knowledge, tasks, cfg, out_dir, revision=None, progress=True):
        calls.append(types.SimpleNamespace(start=start, corpus=corpus, cfg=cfg, out_dir=out_dir))
        return json.loads((out_dir / "result.json").read_text())

    monkeypatch.setattr("ke.continual.continual_learning", fake)
    plan = plan_of(tiny, run_dir=str(tiny.root / "run-fake"))
    numbers = {}
    for run in plan.continual:
        values = [round(random.Random(run.name + str(run.checkpoint.step)).uniform(-5, 5), 3) for _ in range(6)]
        numbers[(run.name, run.checkpoint.step)] = values
        run.out_dir.mkdir(parents=True, exist_ok=True)
        (run.out_dir / "result.json").write_text(json.dumps(fake_result(*values)))
    return types.SimpleNamespace(plan=plan, calls=calls, numbers=numbers)


def fake_result(a: float, f: float, k_pt: float, k_cl: float, p_pt: float, p_cl: float) -> dict:
    curve = [{"K": k_pt, "K_para": k_pt + 0.1, "K_once": k_pt - 0.1, "P": p_pt},
             {"K": k_cl, "K_para": k_cl + 0.2, "K_once": k_cl - 0.2, "P": p_cl}]
    return {"A": a, "F": f, "A_para": a + 1, "A_once": a - 1, "K_PT": k_pt, "K_CL": k_cl, "P_PT": p_pt, "P_CL": p_cl,
            "curve": curve, "provenance": {"items_longer_than_seq_len": 0}}


def test_tables_and_curves_read_the_right_runs(fake_runs, tiny):
    rows = cc.table(fake_runs.plan, "lr_x2.5")
    assert [r["step"] for r in rows] == [0, 10] and [r["fraction"] for r in rows] == [0.0, 1.0]
    for r in rows:
        a, f, k_pt, k_cl, p_pt, p_cl = fake_runs.numbers[("lr_x2.5-pubmed", r["step"])]
        assert (r["A"], r["F"], r["K_PT"], r["K_CL"], r["P_PT"], r["P_CL"]) == (a, f, k_pt, k_cl, p_pt, p_cl)
        assert (r["A_para"], r["A_once"], r["K_para_PT"], r["K_once_CL"]) == (a + 1, a - 1, k_pt + 0.1, k_cl - 0.2)
    c4 = cc.curve(fake_runs.plan, "olmo", corpus="c4")  # starts [10, 0] come back by step
    assert [r["A"] for r in c4] == [fake_runs.numbers[("baseline-c4", s)][0] for s in (0, 10)]
    last = fake_runs.calls[-1]
    assert last.corpus == str(tiny.root / "c4") and last.start == str(tiny.root / "olmo" / "step10")
    assert last.out_dir.parts[-4:] == ("olmo", "seed0", "step10", "baseline-c4")


def test_real_run_is_cached_and_aggregated(tiny):
    plan = plan_of(tiny, run_dir=str(tiny.root / "run-real"))
    run = plan.run("olmo", 10)
    result = execute(run)
    stored = json.loads((run.out_dir / "result.json").read_text())
    [row] = cc.curve(plan, "olmo", steps=[10])
    k_pt, k_cl = stored["curve"][0]["K"], stored["curve"][-1]["K"]
    assert row["A"] == pytest.approx(100 * (k_cl - k_pt) / abs(k_pt))
    p_pt, p_cl = stored["curve"][0]["P"], stored["curve"][-1]["P"]
    assert row["F"] == pytest.approx(-100 * (p_cl - p_pt) / p_pt) and result["F"] == row["F"]
    before = (run.out_dir / "result.json").stat().st_mtime_ns
    execute(run)
    assert (run.out_dir / "result.json").stat().st_mtime_ns == before  # read back, not rerun


def test_entity_perplexities_cached_per_corpus(tiny, monkeypatch):
    plan = plan_of(tiny, run_dir=str(tiny.root / "run-entity"))
    first = cc.perplexities(plan)
    loaded = load_model(str(tiny.model))
    data = Dataset.load_from_disk(str(tiny.root / "pubmed"))  # 120 documents <= entity_docs: all, in order
    direct = entity_perplexity(loaded.model, loaded.tokenizer, data["text"], data["entities"], batch_size=7)
    assert first["pubmed"]["values"] == pytest.approx(direct, rel=1e-5)
    assert set(first) == {"pubmed", "c4"} and first["pubmed"]["checkpoint"] == "olmo/seed0/step10"
    monkeypatch.setattr("ke.metrics.entity_perplexity", lambda *a, **k: pytest.fail("recomputed a cached result"))
    assert cc.perplexities(plan)["c4"]["values"] == first["c4"]["values"]
    monkeypatch.undo()
    small = plan_of(tiny, run_dir=str(tiny.root / "run-entity"), continual={"entity_docs": 5})
    assert len(cc.perplexities(small)["pubmed"]["values"]) == 5  # another sample is another result
    bad = plan_of(tiny, run_dir=str(tiny.root / "run-entity2"), continual={"corpora": {"pubmed": str(tiny.root / "olmo")}})
    with pytest.raises(UserError, match="--corpus|entities"):
        cc.perplexities(bad)


def test_resuscitated_entropy_against_a_second_path(tiny):
    """The plan's resuscitated checkpoint, measured like the others, equals measuring, applying Algorithm 1 by hand
    and measuring again; its first layer lands exactly where Algorithm 1 aims."""
    plan = plan_of(tiny, run_dir=str(tiny.root / "run-res"))
    for stage in plan.work()[2:4]:  # measurements, then resuscitated checkpoints
        for item in stage:
            execute(item)
    runs = cr.Runs(plan)
    record = execute(plan.measurement(plan.resuscitated("olmo", 10, 0.5, 2.0)))
    assert runs.entropy(10, 0.5, 2.0) == record["knowledge_entropy"]
    loaded = load_model(str(tiny.model))
    settings = EntropySettings(seq_len=32, batch_size=4)
    docs = make_texts(12, seed=5)
    before = measure(loaded.model, loaded.tokenizer, docs, settings, progress=False)
    torch.testing.assert_close(coefficients(plan, "olmo", 10), before.mean_abs_coefficients, rtol=1e-5, atol=1e-7)
    resuscitate(loaded.model, before.mean_abs_coefficients, 0.5, 2.0)
    after = measure(loaded.model, loaded.tokenizer, docs, settings, progress=False)
    assert record["knowledge_entropy"] == pytest.approx(after.knowledge_entropy, rel=1e-5)
    intended = cr.intended_coefficients(before.mean_abs_coefficients, 0.5, 2.0)
    out_dir = plan.measurement(plan.resuscitated("olmo", 10, 0.5, 2.0)).out_dir
    torch.testing.assert_close(load_coefficients(out_dir)[0].double(), intended[0], rtol=1e-4, atol=1e-7)


def test_entropy_at_starts_joins_by_step(tiny, monkeypatch):
    monkeypatch.setattr("ke.book.chapter_continual.entropy_rows", lambda plan, key, seed=None: [
        {"step": 0, "entropy_dolma": 3.0}, {"step": 10, "entropy_dolma": 2.5}])
    joined = cc.entropy_at_starts(plan_of(tiny), "olmo", [{"step": 10, "A": 1.0}, {"step": 5, "A": 2.0}])
    assert joined == [{"step": 10, "A": 1.0, "entropy": 2.5}]


# ---------------------------------------------------------------- resuscitation outcomes and recipes

def curve_point(k, p):
    by_kind = {kind: {"K": k, "K_para": k, "K_once": k} for kind in ("memorization",)}
    return {"K": k, "K_para": k, "K_once": k, "K_by_kind": by_kind, "P": p, "tasks": {}}


def summary_of(points):
    from ke.continual import summary
    return summary(points)


def test_outcome_on_both_bases():
    original = summary_of([curve_point(-2.0, 60.0), curve_point(-1.5, 54.0)])
    modified = summary_of([curve_point(-2.5, 50.0), curve_point(-1.8, 51.0)])  # its own step 0: the modified model
    out = cr.outcome(modified, original)
    assert out["A"] == pytest.approx(100 * (-1.8 + 2.5) / 2.5) and out["F"] == pytest.approx(-100 * (51 - 50) / 50)
    assert out["A_unmodified"] == pytest.approx(100 * (-1.8 + 2.0) / 2.0)  # the unmodified checkpoint's K_PT
    assert out["F_unmodified"] == pytest.approx(-100 * (51.0 - 60.0) / 60.0)
    alone = cr.outcome(original)  # the original run: both bases coincide
    assert alone["A_unmodified"] == pytest.approx(alone["A"]) and alone["F_unmodified"] == pytest.approx(alone["F"])
    assert cr.outcome(summary_of([curve_point(-2.0, None), curve_point(-1.5, None)]), original)["F_unmodified"] is None


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
    target = cr.intended_coefficients(cbar, ratio, factor)
    effect = cr.recipe_effect(cbar, ratio, factor)
    selected = raised = lowered = 0
    entropy_before = entropy_target = 0.0
    for l, row in enumerate(cbar.double().tolist()):
        t, mean = hand_quantile(row, ratio), sum(row) / len(row)
        expected = [factor * mean if 0 < c <= t else c for c in row]
        assert target[l].tolist() == pytest.approx(expected, rel=1e-12)
        selected += sum(0 < c <= t for c in row)
        raised += sum(0 < c <= t and factor * mean > c for c in row)
        lowered += sum(0 < c <= t and factor * mean < c for c in row)
        entropy_before += -sum(v / sum(row) * math.log(v / sum(row)) for v in row if v > 0)
        entropy_target += -sum(v / sum(expected) * math.log(v / sum(expected)) for v in expected if v > 0)
    n = cbar.numel()
    assert (effect["selected"], effect["raised"], effect["lowered"]) == pytest.approx(
        (100 * selected / n, 100 * raised / n, 100 * lowered / n))
    assert effect["entropy_before"] == pytest.approx(entropy_before, rel=1e-10)
    assert effect["entropy_intended"] == pytest.approx(entropy_target, rel=1e-10)
    if ratio == 0.9 and factor == 1.0:
        assert effect["lowered"] > 0  # p = 90% reaches past the mean: active slots are scaled down


def test_slot_selection_by_hand():
    """Algorithm 1's slots, shared by ke.resuscitate and the chapter: at or below the ratio-quantile of the layer,
    and scaled only above zero."""
    torch.manual_seed(1)
    cbar = torch.rand(2, 30) ** 2
    cbar[0, 3] = 0.0
    threshold, selected, scaled = select_slots(cbar, 0.4)
    for l, row in enumerate(cbar.double().tolist()):
        t = hand_quantile(row, 0.4)
        assert float(threshold[l]) == pytest.approx(t, rel=1e-12)
        assert selected[l].tolist() == [c <= t for c in row] and scaled[l].tolist() == [0 < c <= t for c in row]


def test_initial_stage_window_and_maximum_entropy():
    rows = [{"step": s, "fraction": s / 320} for s in (0, 32, 64, 160, 320)]
    assert [r["step"] for r in from_initial_stage(rows)] == [64, 160, 320]   # 64 / 320 is 20% exactly
    paper = PAPER_MODELS["olmo-1b"]
    record = {"num_layers": paper.layers, "ffn_dim": paper.ffn_dim}
    assert maximum(record) == pytest.approx(144.18, abs=1e-2)   # the paper: 16 ln 8192 = 144.18
    assert maximum(record, layers=1) == pytest.approx(math.log(8192))


@pytest.mark.parametrize("name", ["default", "olmo-1b", "olmo-7b", "pythia-1.4b"])
def test_the_plans_primary_model(name):
    """The OLMo-1B role, else the first model of the file (olmo-7b and pythia-1.4b have no OLMo-1B role)."""
    preset = load_preset(name)
    models = yaml.safe_load(preset.source.read_text())["models"]
    roles = [key for key, spec in models.items() if spec["role"] == "olmo-1b"]
    assert make_plan(preset).primary == (roles[0] if roles else next(iter(models)))


def test_planned_items_are_fully_specified(tiny):
    """Executors never read the preset: every continual item carries paths and a complete configuration."""
    for run in plan_of(tiny).continual:
        assert isinstance(run, ContinualRun) and run.corpus_data and run.knowledge and run.config.steps > 0
        assert run.out_dir.is_absolute() and str(run.out_dir).startswith(str(tiny.root / "run"))


def test_done_count_finds_the_file_each_kind_of_item_writes_last(tmp_path):
    from ke.book.build import done_count
    plan = make_plan(load_preset("smoke", project_root(), run_dir=str(tmp_path / "runs")))
    total = sum(len(stage) for stage in plan.work())
    assert done_count(plan) == (0, total)
    run = plan.pretraining[0]
    for path in (run.out_dir / f"step{run.config.steps}" / "ke_checkpoint.json",
                 plan.measurements[0].out_dir / "entropy.json",
                 plan.resuscitations[0].out_dir / "ke_resuscitation.json", plan.continual[0].out_dir / "result.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert done_count(plan) == (4, total)
