"""Tests of ke.metrics against hand computations: probe log-probabilities, K, A, F, entity perplexity."""
import math

import pytest
import torch

from ke.errors import UserError
from ke.knowledge import Probe
from ke.metrics import acquisition, entity_perplexity, forgetting, knowledge_score, probe_log_probs
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
    # Table 2a, 118k, with Eq. 4 solved for K_PT: K_PT = -0.375, K_CL = -0.281 (Table 2a, 118k) -> A = +25.1 %, the paper's 25.2 up to rounding
    assert acquisition(-0.281, -0.375) == pytest.approx(100 * 0.094 / 0.375)
    assert acquisition(-0.281, -0.375) == pytest.approx(25.1, abs=0.05)
    assert acquisition(-0.40, -0.375) < 0  # probes got worse: negative acquisition
    assert acquisition(3.0, 2.0) == pytest.approx(50.0)
    # Table 1a/2a 118k: P_CL = 54.0 from P_PT = 60.35 -> F = 10.5 %
    assert forgetting(54.0, 60.35) == pytest.approx(10.52, abs=0.01)
    assert forgetting(62.0, 60.0) < 0  # performance went up: negative forgetting


# ---------------------------------------------------------------- entity perplexity (Fig. 10)

def hand_perplexity(model, ids: list[int], occurrences: list[list[int]]) -> float:
    """exp(mean NLL of each occurrence's token positions) from the model's logits, averaged over occurrences."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    nll = [[-logp[j - 1, ids[j]].item() for j in positions] for positions in occurrences]
    return sum(math.exp(sum(v) / len(v)) for v in nll) / len(nll)


def test_entity_perplexity_equals_hand_computation(loaded):
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


def test_entity_perplexity_rejects_mismatched_lists(loaded):
    with pytest.raises(UserError, match="one entity list per document"):
        entity_perplexity(loaded.model, loaded.tokenizer, ["a", "b"], [["a"]], batch_size=2)
