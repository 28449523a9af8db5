"""Tests of ke.continual: injection mechanics, schedules, learning, resume, caching, CLI, data parallelism."""
import argparse
import json
import os
import random
import subprocess
import sys
import textwrap
import types
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoTokenizer, OlmoForCausalLM

from ke.continual import (ContinualConfig, add_cli, continual_learning, inject, injection_group, step_lr,
                          temperature)
from ke.errors import UserError
from ke.knowledge import FictionalKnowledge, injection_schedule, probes
from ke.metrics import acquisition, forgetting, knowledge_score, probe_log_probs
from ke.models import load_model
from ke.train import pack_texts

WORDS = "red blue green small large old new north south east west river city people".split()
FILLER = ("the a of in was born city people company works at university studied lives near river old new "
          "north south east west red blue green large small and is on with for by from to").split()
# 8 steps of 6 rows (4 of them injected at injection steps), injection every 2 steps (groups 1..4), evaluation every 4 steps
SHORT = dict(steps=8, batch_size=6, seq_len=32, lr=1e-2, injections=4, eval_every=4)



def fact(a: str, b: str, c: str) -> dict:
    """A fictional-knowledge item in the paper's schema, about 15 tokens long."""
    return {"train_context": f"the {a} company was born in {b} and works at {c} .",
            "paraphrases": [f"born in {b} , the {a} company works at {c} ."] * 9,
            "mem_input": [f"the {a} company was born in", f"the {a} company was born in {b} and works at"],
            "mem_target": [b, c],
            "gen_input": [f"the {a} company works at", f"born in {b} , the {a} company works at"], "gen_target": [c, c],
            "hard_gen_input": [f"the {a} company"], "hard_gen_target": [f"was born in {b}"]}


def knowledge(seed: int) -> FictionalKnowledge:
    rng = random.Random(seed)
    return FictionalKnowledge([fact(*rng.sample(WORDS, 3)) for _ in range(3)],
                              [fact(*rng.sample(WORDS, 3)) for _ in range(4)])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_models):
    """Saved model, corpus (random word sequences), knowledge (+ a never-injected control) and tasks."""
    root = tmp_path_factory.mktemp("continual")
    rng = random.Random(1)
    texts = [" ".join(rng.choice(FILLER) for _ in range(rng.randint(5, 30))) for _ in range(400)]
    Dataset.from_dict({"text": texts}).save_to_disk(str(root / "corpus"))
    fk = knowledge(0)
    fk.save(root / "knowledge")
    tasks = [{"name": "colours", "role": "world", "questions": [
        {"context": "the river is", "choices": ["blue", "north city"], "answer": 0},
        {"context": "people lives near", "choices": ["the river", "red"], "answer": 0},
        {"context": "a company", "choices": ["works at", "is on old"], "answer": 1}]}]
    (root / "tasks.json").write_text(json.dumps(tasks))
    return types.SimpleNamespace(root=root, model=tiny_models("olmo"), corpus=root / "corpus", fk=fk,
                                 control=knowledge(1), tasks=tasks)


def run(inputs, out, stop_after=None, **overrides):
    cfg = ContinualConfig(**{**SHORT, **overrides})
    return continual_learning(inputs.model, inputs.corpus, inputs.fk, inputs.tasks, cfg, out, progress=False,
                              stop_after=stop_after)


# ----------------------------------------------------------------------------- pure pieces

def test_inject_prepends_and_truncates():
    rows = torch.arange(40).reshape(4, 10)
    items = [[100, 101, 0], [102], list(range(200, 212))]
    out = inject(rows, items, 10)
    assert out[0].tolist() == [100, 101, 0] + list(range(0, 7))  # cat(k, row)[:seq_len]
    assert out[1].tolist() == [102] + list(range(10, 19))
    assert out[2].tolist() == list(range(200, 210))  # an item longer than a row fills it
    assert out[3].tolist() == list(range(30, 40))  # rows without an item are untouched
    assert rows[0].tolist() == list(range(10))  # the input is not modified
    with pytest.raises(UserError, match="raise --batch-size to at least 6"):
        inject(rows, items * 2, 10)


def test_injection_steps_follow_the_official_arithmetic():
    cfg = ContinualConfig(steps=1600, injections=10)
    steps = [s for s in range(1, 1601) if injection_group(s, cfg) is not None]
    assert steps == list(range(160, 1601, 160))  # 160, 320, ..., the final step 1600
    assert [injection_group(s, cfg) for s in steps] == list(range(1, 11))
    three = ContinualConfig(steps=1600, injections=10, epochs=3)  # the schedule repeats every epoch
    groups = [(s, injection_group(s, three)) for s in range(1, 4801) if injection_group(s, three)]
    assert len(groups) == 30 and groups[10] == (1760, 1) and groups[-1] == (4800, 10)
    assert ContinualConfig().interval == 16 and ContinualConfig().eval_interval == 16


def test_learning_rate_is_olmo_cos_with_warmup():
    cfg = ContinualConfig(steps=1600, lr=4e-4)
    assert step_lr(1, cfg) == pytest.approx(4e-4 * (0.1 + 0.9 / 80))  # warmup from 0.1 lr over 80 steps
    assert step_lr(80, cfg) == pytest.approx(4e-4)
    assert step_lr(840, cfg) == pytest.approx(4e-4 * (0.1 + 0.9 * 0.5))  # half-way through the cosine
    assert step_lr(1600, cfg) == pytest.approx(4e-5)  # the final update runs at the 0.1 floor


def test_temperature_decays_linearly_and_is_set_before_steps_and_evaluations(inputs, tmp_path, monkeypatch):
    cfg = ContinualConfig(steps=1600, attention_temperature=2.0)
    assert (temperature(0, cfg), temperature(800, cfg), temperature(1600, cfg)) == (2.0, 1.5, 1.0)
    assert temperature(800, ContinualConfig(steps=1600, attention_temperature=2.0, temperature_decay=False)) == 2.0
    calls = []
    fake = types.ModuleType("ke.resuscitate")
    fake.set_attention_temperature = lambda model, t: calls.append(t)
    monkeypatch.setitem(sys.modules, "ke.resuscitate", fake)
    run(inputs, tmp_path, attention_temperature=3.0)
    t = lambda s: 3.0 - 2.0 * s / 8  # noqa: E731
    expected = [t(0)] + [x for s in range(1, 9) for x in ([t(s), t(s)] if s % 4 == 0 else [t(s)])]
    assert calls == pytest.approx(expected)  # before every update, again before each evaluation


# ----------------------------------------------------------------------------- runs

def test_fed_batches_are_corpus_rows_with_knowledge_prepended(inputs, tmp_path, monkeypatch):
    fed = []
    forward = OlmoForCausalLM.forward

    def spy(self, *args, **kwargs):
        if kwargs.get("labels") is not None:
            fed.append(kwargs["input_ids"].clone())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(OlmoForCausalLM, "forward", spy)
    result = run(inputs, tmp_path)
    tok = AutoTokenizer.from_pretrained(inputs.model)
    packed = pack_texts(Dataset.load_from_disk(str(inputs.corpus)), tok, 32)["input_ids"]
    schedule = injection_schedule(inputs.fk, 4)
    assert len(fed) == 8
    for step, batch in enumerate(fed, start=1):
        rows = packed[(step - 1) * 6: step * 6]
        items = schedule[step // 2] if step % 2 == 0 else []
        assert len(items) == (4 if step % 2 == 0 else 0)  # 3 paraphrase items + 1 once item
        for i, row in enumerate(batch.tolist()):
            if i < len(items):
                k = tok(items[i], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                assert row == (k + rows[i])[:32]
            else:
                assert row == rows[i]
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e["injected_group"] for e in log] == [None, 1, None, 2, None, 3, None, 4]
    assert [p["step"] for p in result["curve"]] == [0, 4, 8]
    assert result["curve"][1]["train_loss"] == pytest.approx(sum(e["loss"] for e in log[:4]) / 4)


def test_injected_knowledge_is_learned(inputs, tmp_path):
    """30 updates (10 steps x 3 epochs), every batch injected: the injected facts' probes must beat
    never-injected control facts of the same form, and K must rise from θ_PT."""
    result = run(inputs, tmp_path, steps=10, injections=10, epochs=3, eval_every=10, save_model=True)
    assert [p["step"] for p in result["curve"]] == [0, 10, 20, 30]
    assert result["K_CL"] > result["K_PT"] + 0.5
    assert result["A"] == pytest.approx(acquisition(result["K_CL"], result["K_PT"])) and result["A"] > 10
    if result["P_PT"]:
        assert result["F"] == pytest.approx(forgetting(result["P_CL"], result["P_PT"]))
    after = load_model(str(tmp_path / "model"))
    control = probes(inputs.control)
    k_control = knowledge_score(probe_log_probs(after.model, after.tokenizer, control), control)
    assert result["curve"][-1]["K_para"] > k_control["K_para"] + 0.5  # memorised, not just word statistics
    for key in ("K_PT", "K_CL", "P_PT", "P_CL", "A", "F", "A_para", "A_once", "A_by_kind", "K_CL_by_kind", "provenance"):
        assert key in result
    assert result["provenance"]["ke_version"] and result["config"]["epochs"] == 3


def test_resume_gives_the_same_result_and_finished_runs_are_cached(inputs, tmp_path, monkeypatch):
    whole = run(inputs, tmp_path / "whole", save_model=True)
    assert run(inputs, tmp_path / "cut", save_model=True, stop_after=6) is None  # "interrupted" after step 6
    assert (tmp_path / "cut" / "resume_state.pt").exists() and not (tmp_path / "cut" / "result.json").exists()
    resumed = run(inputs, tmp_path / "cut", save_model=True)  # resumes from the evaluation at step 4
    strip = lambda r: {k: v for k, v in r.items() if k != "provenance"}  # noqa: E731
    assert strip(resumed) == strip(whole)
    a, b = load_file(str(tmp_path / "whole/model/model.safetensors")), load_file(str(tmp_path / "cut/model/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line)["step"] for line in (tmp_path / "cut/train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 9))
    assert not (tmp_path / "cut" / "resume_state.pt").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run must not load the model")

    monkeypatch.setattr("ke.models.load_model", no_training)
    assert run(inputs, tmp_path / "whole", save_model=True) == whole
    with pytest.raises(UserError, match="another configuration"):
        run(inputs, tmp_path / "whole", save_model=True, lr=2e-2)


def test_bad_input_is_one_clear_sentence(inputs, tmp_path):
    with pytest.raises(UserError, match="raise --batch-size to at least 4"):
        run(inputs, tmp_path / "a", batch_size=2)
    with pytest.raises(UserError, match="multiple of --injections"):
        run(inputs, tmp_path / "b", steps=7)
    with pytest.raises(UserError, match="packs into .* rows"):
        run(inputs, tmp_path / "c", steps=400)
    with pytest.raises(UserError, match="'text' column"):
        continual_learning(inputs.model, Dataset.from_dict({"body": ["x"]}), inputs.fk, [], ContinualConfig(**SHORT),
                           tmp_path / "d")
    with pytest.raises(UserError, match="answer"):
        continual_learning(inputs.model, inputs.corpus, inputs.fk, [{"name": "t", "questions": [{"context": "a"}]}],
                           ContinualConfig(**SHORT), tmp_path / "e")


def test_cli(inputs, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    base = ["continual", str(inputs.model), "--corpus", str(inputs.corpus), "--tasks", str(inputs.root / "tasks.json"),
            "--steps", "4", "--injections", "2", "--batch-size", "6", "--seq-len", "32", "--lr", "0.01"]
    args = parser.parse_args(base + ["--knowledge", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    with pytest.raises(UserError, match="does not exist"):
        args.func(args)
    args = parser.parse_args(base + ["--knowledge", str(inputs.root / "knowledge"), "--out", str(tmp_path / "y"),
                                     "--no-temperature-decay", "--no-progress"])
    assert args.temperature_decay is False and args.eval_every is None
    args.func(args)
    shown = json.loads(capsys.readouterr().out.splitlines()[0])
    saved = json.loads((tmp_path / "y" / "result.json").read_text())
    assert shown["A"] == saved["A"] and saved["config"]["steps"] == 4 and saved["config"]["injections"] == 2


def test_data_parallel_matches_one_process(inputs, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo) gives the weights of one process with the same global
    batch. On a CPU-only machine accelerate needs ACCELERATE_USE_CPU=1 with --multi_gpu: `--cpu` alone
    starts a single process unless mpirun is configured."""
    cfg = ContinualConfig(**SHORT, save_model=True)
    one = continual_learning(inputs.model, inputs.corpus, inputs.fk, inputs.tasks, cfg, tmp_path / "one", progress=False)
    script = tmp_path / "launch.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from ke.continual import ContinualConfig, continual_learning
        from ke.knowledge import load_fictional_knowledge
        cfg = ContinualConfig(**json.loads({json.dumps(json.dumps(asdict(cfg)))}))
        continual_learning({str(inputs.model)!r}, {str(inputs.corpus)!r}, load_fictional_knowledge({str(inputs.root / 'knowledge')!r}),
                           json.load(open({str(inputs.root / 'tasks.json')!r})), cfg, {str(tmp_path / 'two')!r}, progress=False)
    """))
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
                           str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert two["provenance"]["processes"] == 2 and one["provenance"]["processes"] == 1
    a, b = load_file(str(tmp_path / "one/model/model.safetensors")), load_file(str(tmp_path / "two/model/model.safetensors"))
    start = load_file(str(inputs.model / "model.safetensors"))
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    differ = max((a[k] - b[k]).abs().max().item() for k in a)
    assert differ < 1e-5 and differ < 1e-3 * moved  # float reordering in the gradient all-reduce, nothing more
    assert [p["K"] for p in two["curve"]] == pytest.approx([p["K"] for p in one["curve"]], abs=1e-5)
