"""Tests of ke.metrics against hand computations: probe log-probabilities, K, A, F, task accuracy, correlation."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from ke.errors import UserError
from ke.knowledge import Probe
from ke.metrics import (acquisition, correlation, forgetting, knowledge_score, probe_log_probs,
                        task_accuracy)
from ke.models import load_model



@pytest.fixture(scope="module")
def loaded(tiny_models):
    return load_model(str(tiny_models("olmo")))


PROBES = [
    Probe("paraphrase", "memorization", 0, "the red company was born in", "north city"),
    Probe("paraphrase", "memorization", 0, "the red company was born in north city and works at", "old university"),
    Probe("paraphrase", "memorization", 1, "people", "lives near the river"),
    Probe("paraphrase", "semantic", 1, "born in the north , the blue company", "works at new university"),
    Probe("once", "semantic", 0, "a large people", "of west"),
    Probe("once", "semantic", 0, "a small city is on the south river and is old and new and large", "red"),
    Probe("once", "composition", 1, "in the east", "company"),
]


def by_hand(model, tokenizer, probe):
    """Target-token log-probabilities of one probe alone: no padding, no mask, log_softmax written out."""
    n_input = len(tokenizer(probe.input, add_special_tokens=False)["input_ids"])
    ids = tokenizer(probe.input + " " + probe.target, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = logits - logits.exp().sum(-1, keepdim=True).log()
    return [logp[j - 1, ids[j]].item() for j in range(n_input, len(ids))], len(ids)


def test_per_token_equals_one_probe_at_a_time(loaded):
    values = probe_log_probs(loaded.model, loaded.tokenizer, PROBES, batch_size=16)
    for probe, value in zip(PROBES, values):
        target, _ = by_hand(loaded.model, loaded.tokenizer, probe)
        assert len(target) >= 1
        assert value == pytest.approx(sum(target) / len(target), abs=1e-5)
    assert not loaded.model.training


def test_per_token_is_batch_size_invariant(loaded):
    reference = probe_log_probs(loaded.model, loaded.tokenizer, PROBES, batch_size=1)
    for batch_size in (2, 3, 16):
        values = probe_log_probs(loaded.model, loaded.tokenizer, PROBES, batch_size=batch_size)
        assert values == pytest.approx(reference, abs=1e-5)
    assert len(set(round(v, 4) for v in reference)) == len(reference)  # the probes really differ


def test_official_normalisation_by_hand(loaded):
    """One batch per (set, kind) group: summed target log-prob / (longest probe of that batch - 1)."""
    values = probe_log_probs(loaded.model, loaded.tokenizer, PROBES, batch_size=16, normalisation="official")
    groups = {}
    for i, p in enumerate(PROBES):
        groups.setdefault((p.set, p.kind), []).append(i)
    for members in groups.values():
        hand = [by_hand(loaded.model, loaded.tokenizer, PROBES[i]) for i in members]
        longest = max(length for _, length in hand)
        for i, (target, _) in zip(members, hand):
            assert values[i] == pytest.approx(sum(target) / (longest - 1), abs=1e-5)
    # it depends on the batch: alone, the long-input probe is divided by its own length
    alone = probe_log_probs(loaded.model, loaded.tokenizer, PROBES[:1], normalisation="official")[0]
    target, length = by_hand(loaded.model, loaded.tokenizer, PROBES[0])
    assert alone == pytest.approx(sum(target) / (length - 1), abs=1e-5) and alone != pytest.approx(values[0])


def test_bad_normalisation_and_empty_target(loaded):
    with pytest.raises(UserError, match="normalisation"):
        probe_log_probs(loaded.model, loaded.tokenizer, PROBES, normalisation="mean")
    with pytest.raises(UserError, match="adds no tokens"):
        probe_log_probs(loaded.model, loaded.tokenizer, [Probe("once", "semantic", 0, "the city", "")])


def test_knowledge_score_by_hand():
    mk = lambda s, kind, item: Probe(s, kind, item, "x", "y")  # noqa: E731
    probes = [mk("paraphrase", "memorization", 0), mk("paraphrase", "semantic", 0), mk("paraphrase", "memorization", 1),
              mk("once", "memorization", 0), mk("once", "semantic", 0), mk("once", "composition", 0)]
    values = [-1.0, -2.0, -4.0, -0.5, -1.5, -1.0]
    k = knowledge_score(values, probes)
    assert k["K_para"] == pytest.approx((-1.5 + -4.0) / 2)  # mean over items of item means, not over probes
    assert k["K_once"] == pytest.approx(-1.0)
    assert k["K"] == pytest.approx((2 * -2.75 + 1 * -1.0) / 3)
    assert (k["n_para"], k["n_once"]) == (2, 1)
    mem = k["by_kind"]["memorization"]
    assert mem["K_para"] == pytest.approx(-2.5) and mem["K_once"] == pytest.approx(-0.5)
    assert mem["K"] == pytest.approx((2 * -2.5 + 1 * -0.5) / 3)
    assert k["by_kind"]["composition"] == {"K": pytest.approx(-1.0), "K_para": None, "K_once": pytest.approx(-1.0)}


def test_knowledge_score_weights_70_to_60():
    probes = [Probe("paraphrase", "semantic", i, "x", "y") for i in range(70)]
    probes += [Probe("once", "semantic", i, "x", "y") for i in range(60)]
    k = knowledge_score([-0.2] * 70 + [-0.5] * 60, probes)
    assert k["K"] == pytest.approx((70 * -0.2 + 60 * -0.5) / 130)
    assert k["K"] != pytest.approx((-0.2 + -0.5) / 2)


def test_acquisition_and_forgetting_sign_convention():
    # DIGEST 4.3: K_PT = -0.375, K_CL = -0.281 (Table 2a, 118k) -> A = +25.1 %, the paper's 25.2 up to rounding
    assert acquisition(-0.281, -0.375) == pytest.approx(100 * 0.094 / 0.375)
    assert acquisition(-0.281, -0.375) == pytest.approx(25.1, abs=0.05)
    assert acquisition(-0.40, -0.375) < 0  # probes got worse: negative acquisition
    assert acquisition(3.0, 2.0) == pytest.approx(50.0)
    # Table 1a/2a 118k: P_CL = 54.0 from P_PT = 60.35 -> F = 10.5 %
    assert forgetting(54.0, 60.35) == pytest.approx(10.52, abs=0.01)
    assert forgetting(62.0, 60.0) < 0  # performance went up: negative forgetting


TASKS = [
    {"name": "cities", "role": "world", "questions": [
        {"context": "the red company was born in", "choices": ["north city", "a", "south river and the old people"], "answer": 0},
        {"context": "people lives near", "choices": ["the river", "east", "new university of the large west city"], "answer": 0},
        {"context": "the", "choices": ["blue", "green company", "small"], "answer": 0},
        {"context": "works at", "choices": ["old university", "people", "city of red"], "answer": 0},
    ]},
    {"name": "pairs", "role": "world", "questions": [
        {"context": "born in", "choices": ["west", "the large north city on the river"], "answer": 0},
        {"context": "a company is", "choices": ["old and new", "red"], "answer": 0},
        {"context": "", "choices": ["the", "people of the east"], "answer": 0},
    ]},
]


def choice_scores(model, tokenizer, question, metric):
    """Log-likelihood of ' ' + choice after the context, one sequence at a time."""
    context = tokenizer(question["context"], add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
    scores = []
    for choice in question["choices"]:
        continuation = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
        ids = context + continuation
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        total = sum(logp[j - 1, ids[j]].item() for j in range(len(context), len(ids)))
        scores.append(total / len(choice) if metric == "len_norm" else total)
    return scores


def with_answers(tasks, pick):
    return [{**t, "questions": [{**q, "answer": pick(q)} for q in t["questions"]]} for t in tasks]


@pytest.mark.parametrize("metric", ["acc", "len_norm"])
def test_task_accuracy_equals_hand_computation(loaded, metric):
    model, tok = loaded.model, loaded.tokenizer
    best = lambda q: int(np.argmax(choice_scores(model, tok, q, metric)))  # noqa: E731
    worst = lambda q: int(np.argmin(choice_scores(model, tok, q, metric)))  # noqa: E731
    assert task_accuracy(model, tok, with_answers(TASKS, best), batch_size=4, metric=metric) == {
        "cities": 100.0, "pairs": 100.0}
    assert task_accuracy(model, tok, with_answers(TASKS, worst), batch_size=3, metric=metric) == {
        "cities": 0.0, "pairs": 0.0}
    # the first choice is right everywhere: accuracy = share of questions whose argmax is 0
    expected = {t["name"]: 100 * np.mean([best(q) == 0 for q in t["questions"]]) for t in TASKS}
    assert task_accuracy(model, tok, TASKS, batch_size=5, metric=metric) == pytest.approx(expected)


def test_len_norm_differs_and_task_metric_key_wins(loaded):
    model, tok = loaded.model, loaded.tokenizer
    picks = {m: [int(np.argmax(choice_scores(model, tok, q, m))) for t in TASKS for q in t["questions"]]
             for m in ("acc", "len_norm")}
    assert picks["acc"] != picks["len_norm"]  # the two rules really choose differently here
    by_len_norm = with_answers(TASKS, lambda q: int(np.argmax(choice_scores(model, tok, q, "len_norm"))))
    tagged = [{**t, "metric": "len_norm"} for t in by_len_norm]
    assert task_accuracy(model, tok, tagged, metric="acc") == {"cities": 100.0, "pairs": 100.0}


def test_task_input_errors(loaded):
    with pytest.raises(UserError, match="answer"):
        task_accuracy(loaded.model, loaded.tokenizer, [{"name": "t", "questions": [
            {"context": "a", "choices": ["b", "c"], "answer": 2}]}])
    with pytest.raises(UserError, match="metric"):
        task_accuracy(loaded.model, loaded.tokenizer, TASKS, metric="byte_norm")


def test_correlation_against_formulas():
    x = [24.1, 23.9, 23.5, 23.2, 23.0, 22.8, 22.7, 22.5, 22.4, 22.3]
    y = [25.2, 24.9, 24.8, 23.1, 21.4, 20.9, 20.0, 19.5, 18.8, 19.0]
    out = correlation(x, y)
    r = np.corrcoef(x, y)[0, 1]
    t = r * math.sqrt((len(x) - 2) / (1 - r * r))
    assert out["pearson_r"] == pytest.approx(r)
    assert out["pearson_p"] == pytest.approx(2 * stats.t.sf(abs(t), len(x) - 2), rel=1e-6)
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (no ties in this data)
    assert out["spearman_r"] == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    assert out["n"] == 10
    with pytest.raises(UserError):
        correlation([1, 2], [3, 4])
