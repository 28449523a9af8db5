"""ke.experiments (the continual chapter's runs and aggregation) and ke.metrics.entity_perplexity, on a tiny
preset whose models are local run folders (step0/, step10/) of tiny random OLMo models."""
from __future__ import annotations

import json
import math
import random
import types

import pytest
import torch
import yaml
from datasets import Dataset
from scipy import stats

from conftest import WORDS, save_tiny_model
from ke import experiments, paper
from ke.config import load_preset, project_root
from ke.errors import UserError
from ke.knowledge import FictionalKnowledge
from ke.metrics import entity_perplexity
from ke.models import load_model

ENTITIES = ["red river", "north city", "blue company", "old university"]



def fact(a: str, b: str) -> dict:
    return {"train_context": f"the {a} people was born in {b} .",
            "paraphrases": [f"born in {b} , the {a} people ."] * 9,
            "mem_input": [f"the {a} people was born in"], "mem_target": [b], "gen_input": [f"the {a} people"],
            "gen_target": [f"was born in {b}"], "hard_gen_input": [f"born in {b} , the"], "hard_gen_target": [a]}


def document(rng: random.Random) -> tuple[str, list[str]]:
    """Filler words with one or two entities in it; the entities list names them."""
    names = rng.sample(ENTITIES, 2)
    words = [rng.choice(WORDS[:8]) for _ in range(rng.randint(4, 12))]
    words.insert(rng.randint(0, len(words)), names[0])
    words.insert(rng.randint(0, len(words)), names[1])
    return " ".join(words), names


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer_dir):
    """A preset YAML with its own run_dir, a local run folder of two tiny OLMo checkpoints, two corpora with an
    `entities` column, fictional knowledge and tasks."""
    root = tmp_path_factory.mktemp("experiments")
    for step in (0, 10):
        save_tiny_model("olmo", tokenizer_dir, root / "olmo" / f"step{step}", seed=step)
    rng = random.Random(0)
    for name in ("pubmed", "c4"):
        docs = [document(rng) for _ in range(120)]
        data = Dataset.from_dict({"text": [d for d, _ in docs], "entities": [e for _, e in docs]})
        data.save_to_disk(str(root / name))
    Dataset.from_dict({"text": [document(rng)[0] for _ in range(20)]}).save_to_disk(str(root / "plain"))
    FictionalKnowledge([fact("red", "north"), fact("blue", "south")],
                       [fact("green", "east"), fact("old", "west")]).save(root / "knowledge")
    tasks = [{"name": "t", "questions": [{"context": "the river is", "choices": ["blue", "north city"], "answer": 0},
                                         {"context": "a company", "choices": ["works at", "red"], "answer": 1}]}]
    (root / "tasks.json").write_text(json.dumps(tasks))
    spec = {"name": "tiny", "run_dir": str(root / "run"),
            "models": {"olmo": {"family": "olmo", "label": "tiny OLMo", "source": str(root / "olmo")}},
            "entropy": {"corpora": {"dolma": str(root / "plain")}, "max_docs": 4, "seq_len": 32, "batch_size": 4},
            "continual": {"corpora": {"pubmed": str(root / "pubmed"), "c4": str(root / "c4")},
                          "knowledge": str(root / "knowledge"), "tasks": str(root / "tasks.json"),
                          "starts": {"olmo": [10, 0]}, "table_starts": [0, 10], "entity_docs": 200,
                          "config": {"steps": 2, "batch_size": 4, "seq_len": 32, "lr": 1.0e-3, "injections": 2},
                          "settings": {"baseline": {}, "lr_x2.5": {"lr": 2.5e-3}, "batch_x16": {"batch_size": 8}}}}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return types.SimpleNamespace(root=root, yaml=path, model=root / "olmo" / "step10")


def preset_of(tiny, **overrides):
    return load_preset(str(tiny.yaml), project_root(), **overrides)


# ---------------------------------------------------------------- entity perplexity

def hand_perplexity(model, ids: list[int], occurrences: list[list[int]]) -> float:
    """exp(mean NLL of each occurrence's token positions) from the model's logits, averaged over occurrences."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    nll = [[-logp[j - 1, ids[j]].item() for j in positions] for positions in occurrences]
    return sum(math.exp(sum(v) / len(v)) for v in nll) / len(nll)


def test_entity_perplexity_equals_hand_computation(tiny):
    loaded = load_model(str(tiny.model))
    model, tok = loaded.model, loaded.tokenizer
    # the document as pieces; the Whitespace pre-tokenizer makes the pieces' tokens add up to the document's
    pieces = [("red river", True), ("was born in the", False), ("north city", True), ("and the", False),
              ("red river", True), ("is old", False)]
    text = " ".join(p for p, _ in pieces)
    ids, occurrences = [tok.eos_token_id], []
    for piece, is_entity in pieces:
        piece_ids = tok(piece, add_special_tokens=False)["input_ids"]
        if is_entity:
            occurrences.append(list(range(len(ids), len(ids) + len(piece_ids))))
        ids += piece_ids
    assert ids[1:] == tok(text, add_special_tokens=False)["input_ids"]
    expected = hand_perplexity(model, ids, occurrences)
    docs = [text, "the blue company", "north south east"]  # shorter rows pad the batch; the last has no entity
    got = entity_perplexity(model, tok, docs, [["red river", "north city"], ["blue company"], ["old university"]],
                            batch_size=3)
    assert got[0] == pytest.approx(expected, rel=1e-5)
    blue = [tok.eos_token_id] + tok("the blue company", add_special_tokens=False)["input_ids"]
    assert got[1] == pytest.approx(hand_perplexity(model, blue, _positions(tok, "the", "blue company")), rel=1e-5)
    assert got[2] is None
    # cut before the second "red river" ends: only the first two occurrences count
    cut = occurrences[2][-1]  # keeps tokens up to (not including) the last token of the third occurrence
    truncated = entity_perplexity(model, tok, [text], [["red river", "north city"]], batch_size=1, max_length=cut)
    assert truncated[0] == pytest.approx(hand_perplexity(model, ids[:cut], occurrences[:2]), rel=1e-5)
    alone = entity_perplexity(model, tok, [text], [["red river", "north city"]], batch_size=1)
    assert alone[0] == pytest.approx(got[0])  # batching and padding change nothing


def _positions(tok, prefix: str, entity: str) -> list[list[int]]:
    start = 1 + len(tok(prefix, add_special_tokens=False)["input_ids"])
    return [list(range(start, start + len(tok(entity, add_special_tokens=False)["input_ids"])))]


def test_entity_perplexity_rejects_mismatched_lists(tiny):
    loaded = load_model(str(tiny.model))
    with pytest.raises(UserError, match="one entity list per document"):
        entity_perplexity(loaded.model, loaded.tokenizer, ["a", "b"], [["a"]], batch_size=2)


def test_entity_perplexities_cached_per_corpus(tiny, monkeypatch):
    preset = preset_of(tiny, run_dir=str(tiny.root / "run-entity"))
    first = experiments.entity_perplexities(preset, "olmo")
    loaded = load_model(str(tiny.model))
    data = Dataset.load_from_disk(str(tiny.root / "pubmed"))  # 120 documents <= entity_docs: all, in order
    direct = entity_perplexity(loaded.model, loaded.tokenizer, data["text"], data["entities"], batch_size=7)
    assert first["pubmed"]["values"] == pytest.approx(direct, rel=1e-5)
    assert set(first) == {"pubmed", "c4"} and first["pubmed"]["checkpoint"] == "step10"
    monkeypatch.setattr("ke.metrics.entity_perplexity", lambda *a, **k: pytest.fail("recomputed a cached result"))
    assert experiments.entity_perplexities(preset, "olmo")["c4"]["values"] == first["c4"]["values"]
    # a smaller sample is another result: seeded, and of the requested size
    small = preset_of(tiny, run_dir=str(tiny.root / "run-entity"), continual={"entity_docs": 5})
    monkeypatch.undo()
    assert len(experiments.entity_perplexities(small, "olmo")["pubmed"]["values"]) == 5
    bad = preset_of(tiny, run_dir=str(tiny.root / "run-entity2"),
                    continual={"corpora": {"pubmed": str(tiny.root / "plain")}})
    with pytest.raises(UserError, match="no 'entities' column"):
        experiments.entity_perplexities(bad, "olmo")


# ---------------------------------------------------------------- runs and aggregation

def fake_result(a: float, f: float, k_pt: float, k_cl: float, p_pt: float, p_cl: float) -> dict:
    curve = [{"K": k_pt, "K_para": k_pt + 0.1, "K_once": k_pt - 0.1, "P": p_pt},
             {"K": k_cl, "K_para": k_cl + 0.2, "K_once": k_cl - 0.2, "P": p_cl}]
    return {"A": a, "F": f, "A_para": a + 1, "A_once": a - 1, "K_PT": k_pt, "K_CL": k_cl, "P_PT": p_pt, "P_CL": p_cl,
            "curve": curve, "provenance": {"items_longer_than_seq_len": 0}}


@pytest.fixture
def fake_runs(tiny, monkeypatch):
    """Replace the training loop by a reader of result.json in the run's folder; record each call."""
    calls = []

    def fake(start, corpus, knowledge, tasks, cfg, out_dir, revision=None, progress=True):
        calls.append(types.SimpleNamespace(start=start, corpus=corpus, cfg=cfg, out_dir=out_dir))
        return json.loads((out_dir / "result.json").read_text())

    monkeypatch.setattr(experiments, "continual_learning", fake)
    preset = preset_of(tiny, run_dir=str(tiny.root / "run-fake"))
    numbers = {}
    for setting in ("baseline", "lr_x2.5", "batch_x16"):
        for corpus in ("pubmed", "c4"):
            for step in (0, 10):
                values = [round(random.Random(f"{setting}{corpus}{step}").uniform(-5, 5), 3) for _ in range(6)]
                numbers[(setting, corpus, step)] = values
                out = experiments.run_dir(preset, "olmo", step, f"{setting}-{corpus}")
                out.mkdir(parents=True, exist_ok=True)
                (out / "result.json").write_text(json.dumps(fake_result(*values)))
    return types.SimpleNamespace(preset=preset, calls=calls, numbers=numbers)


def test_table_and_curve_rows_read_the_right_runs(fake_runs, tiny):
    rows = experiments.table(fake_runs.preset, "lr_x2.5")
    assert [r["step"] for r in rows] == [0, 10] and [r["fraction"] for r in rows] == [0.0, 1.0]
    for r in rows:
        a, f, k_pt, k_cl, p_pt, p_cl = fake_runs.numbers[("lr_x2.5", "pubmed", r["step"])]
        assert (r["A"], r["F"], r["K_PT"], r["K_CL"], r["P_PT"], r["P_CL"]) == (a, f, k_pt, k_cl, p_pt, p_cl)
        assert (r["A_para"], r["A_once"]) == (a + 1, a - 1)
        assert (r["K_para_PT"], r["K_once_CL"]) == (k_pt + 0.1, k_cl - 0.2)
    c4 = experiments.curve_rows(fake_runs.preset, "olmo", corpus="c4")  # starts [10, 0] come back by step
    assert [r["A"] for r in c4] == [fake_runs.numbers[("baseline", "c4", s)][0] for s in (0, 10)]
    last = fake_runs.calls[-1]
    assert last.corpus == str(tiny.root / "c4") and last.start == str(tiny.root / "olmo" / "step10")
    assert last.out_dir.parts[-3:] == ("olmo", "step10", "baseline-c4")


def test_settings_overrides_reach_the_config(fake_runs):
    for setting, expected in (("baseline", {"lr": 1e-3, "batch_size": 4}), ("lr_x2.5", {"lr": 2.5e-3, "batch_size": 4}),
                              ("batch_x16", {"lr": 1e-3, "batch_size": 8})):
        experiments.table(fake_runs.preset, setting)
        cfg = fake_runs.calls[-1].cfg
        assert {k: getattr(cfg, k) for k in expected} == expected
        assert (cfg.steps, cfg.seq_len, cfg.injections) == (2, 32, 2)  # the base config still applies


def test_bad_setting_or_corpus_raises_before_running(fake_runs):
    with pytest.raises(UserError, match="setting 'nope'"):
        experiments.curve_rows(fake_runs.preset, "olmo", setting="nope")
    with pytest.raises(UserError, match="corpus 'wiki'"):
        experiments.table(fake_runs.preset, "baseline", corpus="wiki")
    assert fake_runs.calls == []


def test_real_run_is_cached_and_aggregated(tiny):
    preset = preset_of(tiny, run_dir=str(tiny.root / "run-real"))
    result = experiments.run_continual(preset, "olmo", 10)
    path = experiments.run_dir(preset, "olmo", 10, "baseline-pubmed") / "result.json"
    stored = json.loads(path.read_text())
    [row] = experiments.curve_rows(preset, "olmo", steps=[10])
    k_pt, k_cl = stored["curve"][0]["K"], stored["curve"][-1]["K"]
    assert row["A"] == pytest.approx(100 * (k_cl - k_pt) / abs(k_pt))
    p_pt, p_cl = stored["curve"][0]["P"], stored["curve"][-1]["P"]
    assert row["F"] == pytest.approx(-100 * (p_cl - p_pt) / p_pt) and result["F"] == row["F"]
    before = path.stat().st_mtime_ns
    experiments.run_continual(preset, "olmo", 10)
    assert path.stat().st_mtime_ns == before  # read back, not rerun


# ---------------------------------------------------------------- claims, trends, entropy join

def test_paper_tables_satisfy_the_papers_own_claims():
    claims = experiments.hyperparameter_claims({s: experiments.paper_table(s) for s in paper.TABLE_ROWS})
    assert len(claims) == 7 and all(c["holds"] for c in claims)
    gap = next(c for c in claims if c["claim"].startswith("small lr"))
    assert gap["value"] == f"{22.6 - 21.6:+.2f} vs baseline {18.8 - 25.2:+.2f}"


def test_hyperparameter_claims_fail_when_the_numbers_say_so():
    def rows(a, f):
        return [{"A": x, "F": y} for x, y in zip(a, f)]
    tables = {"baseline": rows([5, 4, 3], [1, 2, 3]), "lr_x2.5": rows([6, 5, 1], [0, 3, 4]),
              "epochs_3": rows([6, 5, 4], [1, 2, 3])}
    claims = {c["claim"]: c for c in experiments.hyperparameter_claims(tables)}
    assert not claims["higher lr → lower A"]["holds"]  # higher at 2 of 3 starts
    assert claims["higher lr → more F"]["holds"] and claims["higher lr → more F"]["value"].startswith("2 of 3")
    assert not claims["more epochs → more F"]["holds"]  # equal is not more
    assert "larger batch → lower A" not in claims


def test_monotone_trend_exact_p_values():
    rows = [{"step": s, "A": a} for s, a in zip((1, 2, 3, 4), (4.0, 3.0, 2.5, 1.0))]
    t = experiments.monotone_trend(rows, "A")
    assert t["rho"] == pytest.approx(-1) and t["p"] == pytest.approx(2 / 24) and t["n"] == 4
    rng = random.Random(3)
    rows = [{"step": s, "A": rng.random(), "e": rng.random()} for s in range(5)]
    brute = stats.permutation_test(([r["A"] for r in rows],), lambda y: stats.spearmanr(range(5), y).statistic,
                                   permutation_type="pairings", n_resamples=math.inf)
    assert experiments.monotone_trend(rows, "A")["p"] == pytest.approx(brute.pvalue)
    long = [{"step": s, "A": rng.random()} for s in range(12)]
    assert experiments.monotone_trend(long, "A")["p"] == pytest.approx(
        stats.spearmanr(range(12), [r["A"] for r in long]).pvalue)
    assert experiments.monotone_trend(rows, "A", x="e")["n"] == 5


def test_entropy_at_starts_joins_by_step(tiny, monkeypatch):
    monkeypatch.setattr("ke.analysis.entropy_rows", lambda preset, key: [{"step": 0, "entropy_dolma": 3.0},
                                                                         {"step": 10, "entropy_dolma": 2.5}])
    joined = experiments.entropy_at_starts(preset_of(tiny), "olmo", [{"step": 10, "A": 1.0}, {"step": 5, "A": 2.0}])
    assert joined == [{"step": 10, "A": 1.0, "entropy": 2.5}]
