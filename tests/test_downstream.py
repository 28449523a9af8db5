"""Tests of ke.downstream: local lm-eval tasks scored on an in-memory model equal a hand computation (one forward
pass per choice) and the previous scorer; fingerprints; errors. Nothing here touches the network."""
import random

import numpy as np
import pytest
import torch
import yaml

from conftest import WORDS, make_texts, save_tiny_model
from ke.downstream import TaskSet, write_local_task
from ke.errors import UserError
from ke.models import load_model


@pytest.fixture(scope="module", autouse=True)
def datasets_cache_offline(tmp_path_factory):
    """HF datasets' Arrow copies of the task files go to a temporary cache, and datasets never goes online."""
    import datasets
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets"))
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def loaded(tiny_models):
    return load_model(str(tiny_models("olmo")))


def make_questions(n: int, seed: int = 0) -> list[dict]:
    """Multiple-choice questions whose choices differ much in length (so acc and len_norm disagree);
    one has an empty context (scored after the EOS token)."""
    rng = random.Random(seed)
    words = lambda lo, hi: " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))  # noqa: E731
    questions = [{"context": words(2, 12), "choices": [words(1, 5) for _ in range(rng.choice((2, 3, 4)))],
                  "answer": 0} for _ in range(n)]
    questions[3]["context"] = ""
    return questions


def choice_scores(model, tokenizer, question, metric):
    """Per choice, by hand: context tokens, then the tokens of " " + choice, one forward pass each, the
    summed log-probabilities of the continuation tokens (divided by the choice's characters for len_norm)."""
    scores = []
    context = tokenizer(question["context"], add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
    for choice in question["choices"]:
        continuation = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
        ids = context + continuation
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logp = logits - logits.exp().sum(-1, keepdim=True).log()
        total = sum(logp[j - 1, ids[j]].item() for j in range(len(context), len(ids)))
        scores.append(total / len(choice) if metric == "len_norm" else total)
    return scores


def answered(questions, pick):
    return [{**q, "answer": pick(q)} for q in questions]


@pytest.mark.parametrize("metric", ["acc", "len_norm"])
def test_local_task_equals_hand_computation(loaded, tmp_path, metric):
    model, tok = loaded.model, loaded.tokenizer
    questions = make_questions(12)
    best = [int(np.argmax(choice_scores(model, tok, q, metric))) for q in questions]
    worst = [int(np.argmin(choice_scores(model, tok, q, metric))) for q in questions]
    other = "acc" if metric == "len_norm" else "len_norm"
    assert best != [int(np.argmax(choice_scores(model, tok, q, other))) for q in questions]  # the metric matters
    write_local_task(tmp_path, "best", [{**q, "answer": b} for q, b in zip(questions, best)], metric=metric)
    write_local_task(tmp_path, "worst", [{**q, "answer": w} for q, w in zip(questions, worst)], metric=metric)
    write_local_task(tmp_path, "first", questions, metric=metric)  # answer 0 everywhere
    model.train()
    tasks = TaskSet(names=("best", "worst", "first"), include_path=str(tmp_path))  # metric: the task's own
    rng_states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    result = tasks.evaluate(model, tok, batch_size=5)
    assert model.training  # the caller's mode is kept, and its random number generators are left alone
    assert torch.equal(rng_states[0], torch.get_rng_state()) and rng_states[1] == random.getstate()
    assert np.array_equal(rng_states[2], np.random.get_state()[1])
    model.eval()
    assert result == pytest.approx({"best": 100.0, "worst": 0.0, "first": 100 * np.mean([b == 0 for b in best])})
    # batch size and an explicit metric change nothing; limit scores the first documents only
    lm_metric = {"acc": "acc", "len_norm": "acc_norm"}[metric]
    again = TaskSet(names=("first",), metrics=(lm_metric,), include_path=str(tmp_path))
    assert again.evaluate(model, tok, batch_size=1) == pytest.approx({"first": result["first"]})
    limited = TaskSet(names=("first",), include_path=str(tmp_path), limit=5)
    assert limited.evaluate(model, tok) == pytest.approx({"first": 100 * np.mean([b == 0 for b in best[:5]])})
    # repeated evaluations leave nothing but the task files in the task folder
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.{ext}" for n in ("best", "worst", "first") for ext in ("yaml", "jsonl"))


def test_byte_level_tokenizer_splits_alike(tmp_path_factory):
    """With a byte-level BPE (the kind of OLMo's and Pythia's tokenizers), encoding context + " " + choice whole
    and splitting it (lm-eval) gives the tokens of encoding the two apart (the hand computation)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(make_texts(300), trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok_dir = tmp_path_factory.mktemp("bytelevel")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                            pad_token="<|padding|>").save_pretrained(tok_dir)
    loaded = load_model(str(save_tiny_model("gpt_neox", tok_dir, tmp_path_factory.mktemp("neox"))))
    model, tokenizer = loaded.model, loaded.tokenizer
    questions = make_questions(10, seed=2)
    for q in questions[:3] + questions[4:]:
        context = tokenizer(q["context"], add_special_tokens=False)["input_ids"]
        for c in q["choices"]:
            assert tokenizer(q["context"] + " " + c, add_special_tokens=False)["input_ids"] == (
                context + tokenizer(" " + c, add_special_tokens=False)["input_ids"])
    best = [int(np.argmax(choice_scores(model, tokenizer, q, "len_norm"))) for q in questions]
    folder = tmp_path_factory.mktemp("tasks")
    write_local_task(folder, "best", answered(questions, lambda q: best[questions.index(q)]), metric="len_norm")
    assert TaskSet(names=("best",), include_path=str(folder)).evaluate(model, tokenizer) == {"best": 100.0}


def test_validation_split_preferred(loaded, tmp_path):
    """A task with a test and a validation split: the validation split by default (OLMo's evaluator), the test
    split (lm-eval's default) with validation=False."""
    model, tok = loaded.model, loaded.tokenizer
    questions = make_questions(6, seed=3)
    best = [int(np.argmax(choice_scores(model, tok, q, "acc"))) for q in questions]
    worst = [int(np.argmin(choice_scores(model, tok, q, "acc"))) for q in questions]
    write_local_task(tmp_path / "v", "split", [{**q, "answer": b} for q, b in zip(questions, best)])
    write_local_task(tmp_path / "t", "split", [{**q, "answer": w} for q, w in zip(questions, worst)])
    config = yaml.safe_load((tmp_path / "v" / "split.yaml").read_text())
    config["dataset_kwargs"]["data_files"]["test"] = str(tmp_path / "t" / "split.jsonl")
    config["test_split"] = "test"
    (tmp_path / "v" / "split.yaml").write_text(yaml.safe_dump(config))
    assert TaskSet(names=("split",), include_path=str(tmp_path / "v")).evaluate(model, tok) == {"split": 100.0}
    assert TaskSet(names=("split",), include_path=str(tmp_path / "v"), validation=False).evaluate(
        model, tok) == {"split": 0.0}


def test_fingerprint(tmp_path):
    questions = make_questions(4)
    write_local_task(tmp_path, "facts", questions)
    tasks = TaskSet(names=("facts",), include_path=str(tmp_path))
    before = tasks.fingerprint()
    assert TaskSet(names=("facts",), include_path=str(tmp_path)).fingerprint() == before
    for changed in (TaskSet(names=("facts",), include_path=str(tmp_path), limit=2),
                    TaskSet(names=("facts",), include_path=str(tmp_path), metrics=("len_norm",)),
                    TaskSet(names=("facts",), include_path=str(tmp_path), validation=False),
                    TaskSet()):
        assert changed.fingerprint() != before
    write_local_task(tmp_path, "facts", answered(questions, lambda q: 1))  # a task file changes
    assert tasks.fingerprint() != before
    assert TaskSet(metrics=("len_norm",) * 6).metrics == ("acc_norm",) * 6  # OLMo's name is lm-eval's acc_norm


def test_errors(loaded, tmp_path):
    write_local_task(tmp_path, "facts", make_questions(4))
    with pytest.raises(UserError, match="does not exist"):
        TaskSet(names=("facts",), include_path=str(tmp_path / "missing")).evaluate(loaded.model, loaded.tokenizer)
    with pytest.raises(UserError, match="lm-eval knows no task 'sciqq'"):
        TaskSet(names=("sciqq",), include_path=str(tmp_path)).evaluate(loaded.model, loaded.tokenizer)
    with pytest.raises(UserError, match="group"):
        TaskSet(names=("ai2_arc",), include_path=str(tmp_path)).evaluate(loaded.model, loaded.tokenizer)
    config = yaml.safe_load((tmp_path / "facts.yaml").read_text())
    config["metric_list"] = config["metric_list"][:1]  # acc only (as lm-eval's winogrande)
    (tmp_path / "facts.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match="reports no 'acc_norm'"):
        TaskSet(names=("facts",), metrics=("acc_norm",), include_path=str(tmp_path)).evaluate(
            loaded.model, loaded.tokenizer)
    with pytest.raises(UserError, match="metric"):
        TaskSet(names=("facts",), metrics=("byte_norm",))
    with pytest.raises(UserError, match="one metric per task"):
        TaskSet(names=("facts",), metrics=("acc", "acc"))
    with pytest.raises(UserError, match="answer"):
        write_local_task(tmp_path, "bad", [{"context": "a", "choices": ["b", "c"], "answer": 2}])
