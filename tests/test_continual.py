"""Tests of ke.continual: injection mechanics, schedules, micro-batching, learning, resume, caching, data
parallelism with gradient accumulation, FSDP."""
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

from ke.continual import (ContinualConfig, continual_learning, inject, injection_group, is_eval_step,
                          micro_batches, micro_batching, step_lr, step_temperature)
from ke.errors import UserError
from ke.knowledge import FictionalKnowledge, injection_schedule, probes
from ke.metrics import acquisition, forgetting, knowledge_score, probe_log_probs
from ke.models import load_model
from ke.storage import digest
from ke.train import pack_texts

WORDS = "red blue green small large old new north south east west river city people".split()
FILLER = ("the a of in was born city people company works at university studied lives near river old new "
          "north south east west red blue green large small and is on with for by from to").split()
# 8 steps of 6 rows (4 of them injected at injection steps), injection every 2 steps (groups 1..4), evaluation every 4 steps
SHORT = dict(steps=8, batch_size=6, seq_len=32, lr=1e-2, injections=4, eval_every=4)



class ListTasks:
    """Multiple-choice tasks as JSON dicts, scored by hand (summed log-probability of " " + choice after the
    context, one forward per choice), in the duck type continual_learning takes (ke.downstream.TaskSet's)."""

    def __init__(self, tasks: list[dict], metric: str = "acc"):
        self.tasks, self.metric = tasks, metric

    @torch.no_grad()
    def evaluate(self, model, tokenizer, batch_size: int) -> dict[str, float]:
        was_training = model.training
        model.eval()
        out = {}
        for task in self.tasks:
            correct = 0
            for q in task["questions"]:
                context = tokenizer(q["context"], add_special_tokens=False)["input_ids"]
                scores = []
                for choice in q["choices"]:
                    continuation = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
                    logp = model(input_ids=torch.tensor([context + continuation])).logits[0].float().log_softmax(-1)
                    scores.append(sum(logp[len(context) - 1 + i, t].item() for i, t in enumerate(continuation)))
                correct += max(range(len(scores)), key=scores.__getitem__) == q["answer"]
            out[task["name"]] = 100.0 * correct / len(task["questions"])
        model.train(was_training)
        return out

    def fingerprint(self) -> str:
        return digest([self.tasks, self.metric])


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
                                 control=knowledge(1), tasks=ListTasks(tasks))


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


def test_eval_points_are_every_interval_and_the_final_step():
    cfg = ContinualConfig(steps=10, injections=5, epochs=2, eval_every=3)
    assert [s for s in range(1, 21) if is_eval_step(s, cfg)] == [3, 6, 9, 12, 15, 18, 20]
    default = ContinualConfig(steps=10, injections=5)  # the injection interval (official eval_interval 160)
    assert [s for s in range(1, 11) if is_eval_step(s, default)] == [2, 4, 6, 8, 10]


def test_learning_rate_is_olmo_cos_with_warmup():
    cfg = ContinualConfig(steps=1600, lr=4e-4)
    assert step_lr(1, cfg) == pytest.approx(4e-4 * (0.1 + 0.9 / 80))  # warmup from 0.1 lr over 80 steps
    assert step_lr(80, cfg) == pytest.approx(4e-4)
    assert step_lr(840, cfg) == pytest.approx(4e-4 * (0.1 + 0.9 * 0.5))  # half-way through the cosine
    assert step_lr(1600, cfg) == pytest.approx(4e-5)  # the final update runs at the 0.1 floor


def test_micro_batches_follow_the_official_row_to_device_mapping():
    batch = torch.arange(8 * 3).reshape(8, 3)
    for processes, micro in [(1, 8), (1, 2), (2, 4), (2, 2), (4, 1)]:
        share = 8 // processes
        for rank in range(processes):
            parts = micro_batches(batch, rank, processes, micro)
            assert len(parts) == share // micro
            for m, part in enumerate(parts):
                # official: row i goes to device i // device_batch_size; micro-batches cut the device's rows in order
                rows = [i for i in range(8) if i // share == rank and (i % share) // micro == m]
                assert part.tolist() == batch[rows].tolist()


def test_micro_batching_checks_the_global_batch():
    assert micro_batching(ContinualConfig(batch_size=8), 2) == (4, 1)
    assert micro_batching(ContinualConfig(batch_size=8, micro_batch_size=2), 2) == (2, 2)
    assert micro_batching(ContinualConfig(batch_size=8, micro_batch_size=1), 1) == (1, 8)
    with pytest.raises(UserError, match="divisible by the number of processes"):
        micro_batching(ContinualConfig(batch_size=8), 3)
    with pytest.raises(UserError, match="divisor of 4 as --micro-batch-size"):
        micro_batching(ContinualConfig(batch_size=8, micro_batch_size=3), 2)


def test_temperature_decays_linearly_and_is_set_before_steps_and_evaluations(inputs, tmp_path, monkeypatch):
    cfg = ContinualConfig(steps=1600, attention_temperature=2.0)
    assert (step_temperature(0, cfg), step_temperature(800, cfg), step_temperature(1600, cfg)) == (2.0, 1.5, 1.0)
    assert step_temperature(800, ContinualConfig(steps=1600, attention_temperature=2.0, temperature_decay=False)) == 2.0
    calls = []
    monkeypatch.setattr("ke.continual.set_attention_temperature", lambda model, t: calls.append(t))
    run(inputs, tmp_path, attention_temperature=3.0, micro_batch_size=3)  # once per update, not per micro-batch
    t = lambda s: 3.0 - 2.0 * s / 8  # noqa: E731
    expected = [t(0)] + [x for s in range(1, 9) for x in ([t(s), t(s)] if s % 4 == 0 else [t(s)])]
    assert calls == pytest.approx(expected)  # before every update, again before each evaluation


# ----------------------------------------------------------------------------- runs

@pytest.mark.parametrize("micro", [None, 2])
def test_fed_batches_are_corpus_rows_with_knowledge_prepended(inputs, tmp_path, monkeypatch, micro):
    fed = []
    forward = OlmoForCausalLM.forward

    def spy(self, *args, **kwargs):
        if kwargs.get("labels") is not None:
            fed.append(kwargs["input_ids"].clone())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(OlmoForCausalLM, "forward", spy)
    result = run(inputs, tmp_path, micro_batch_size=micro)
    tok = AutoTokenizer.from_pretrained(inputs.model)
    packed = pack_texts(Dataset.load_from_disk(str(inputs.corpus)), tok, 32)["input_ids"]
    schedule = injection_schedule(inputs.fk, 4)
    per_step = 6 // (micro or 6)
    assert len(fed) == 8 * per_step and all(b.shape[0] == (micro or 6) for b in fed)
    for step in range(1, 9):
        batch = torch.cat(fed[(step - 1) * per_step: step * per_step])  # the micro-batches, in order
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


def test_accumulation_gives_the_full_batch_update(inputs, tmp_path):
    """3 micro-batches of 2 rows per update give the update of one 6-row batch (float rounding apart), and the
    micro-batch size is not part of a result's identity."""
    whole = run(inputs, tmp_path / "whole", save_model=True)
    accumulated = run(inputs, tmp_path / "accumulated", save_model=True, micro_batch_size=2)
    assert accumulated["provenance"]["accumulation"] == 3 and whole["provenance"]["accumulation"] == 1
    a, b = (load_file(str(tmp_path / name / "model/model.safetensors")) for name in ("whole", "accumulated"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    for key in ("K", "train_loss"):
        assert [p[key] for p in accumulated["curve"]] == pytest.approx([p[key] for p in whole["curve"]], abs=1e-5)
    logs = [[json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
            for name in ("whole", "accumulated")]
    for key in ("loss", "grad_norm"):  # the gradient before clipping is the full batch's, not a sum over parts
        assert [e[key] for e in logs[1]] == pytest.approx([e[key] for e in logs[0]], rel=1e-5)
    assert run(inputs, tmp_path / "whole", save_model=True, micro_batch_size=3) == whole  # cached


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
    # P is the mean of the task accuracies, measured by the tasks object on the saved model
    accuracies = inputs.tasks.evaluate(after.model, after.tokenizer, 8)
    assert result["P_CL"] == pytest.approx(sum(accuracies.values()) / len(accuracies))


def test_resume_gives_the_same_result_and_finished_runs_are_cached(inputs, tmp_path, monkeypatch):
    whole = run(inputs, tmp_path / "whole", save_model=True)
    assert run(inputs, tmp_path / "cut", save_model=True, stop_after=6) is None  # "interrupted" after step 6
    resume = tmp_path / "cut" / "resume"
    assert json.loads((resume / "resume.json").read_text())["step"] == 4  # the last evaluation
    assert not (tmp_path / "cut" / "result.json").exists()
    resumed = run(inputs, tmp_path / "cut", save_model=True)  # resumes from the evaluation at step 4
    strip = lambda r: {k: v for k, v in r.items() if k != "provenance"}  # noqa: E731
    assert strip(resumed) == strip(whole)
    a, b = load_file(str(tmp_path / "whole/model/model.safetensors")), load_file(str(tmp_path / "cut/model/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line)["step"] for line in (tmp_path / "cut/train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 9))
    assert not resume.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run must not load the model")

    monkeypatch.setattr("ke.models.load_model", no_training)
    assert run(inputs, tmp_path / "whole", save_model=True) == whole
    with pytest.raises(UserError, match="another configuration"):
        run(inputs, tmp_path / "whole", save_model=True, lr=2e-2)


def test_an_interrupted_run_of_another_configuration_is_refused(inputs, tmp_path):
    assert run(inputs, tmp_path / "early", stop_after=3) is None
    assert not (tmp_path / "early" / "resume").exists()  # no update evaluated yet: nothing to resume
    assert run(inputs, tmp_path, stop_after=5) is None
    with pytest.raises(UserError, match="interrupted run of another configuration"):
        run(inputs, tmp_path, lr=2e-2)


def test_bad_input_is_one_clear_sentence(inputs, tmp_path):
    with pytest.raises(UserError, match="raise --batch-size to at least 4"):
        run(inputs, tmp_path / "a", batch_size=2)
    with pytest.raises(UserError, match="multiple of --injections"):
        run(inputs, tmp_path / "b", steps=7)
    with pytest.raises(UserError, match="packs into .* rows"):
        run(inputs, tmp_path / "c", steps=400)
    with pytest.raises(UserError, match="divisor of 6 as --micro-batch-size"):
        run(inputs, tmp_path / "d", micro_batch_size=4)
    with pytest.raises(UserError, match="--micro-batch-size must be a positive integer"):
        run(inputs, tmp_path / "e", micro_batch_size=0)
    with pytest.raises(UserError, match="'text' column"):
        continual_learning(inputs.model, Dataset.from_dict({"body": ["x"]}), inputs.fk, None,
                           ContinualConfig(**SHORT), tmp_path / "f")
    with pytest.raises(UserError, match="evaluate.*fingerprint.*got list"):
        continual_learning(inputs.model, inputs.corpus, inputs.fk, inputs.tasks.tasks, ContinualConfig(**SHORT),
                           tmp_path / "g")


# ----------------------------------------------------------------------------- several processes

# accelerate enables FSDP only on accelerator devices (its MULTI_CPU type never becomes FSDP). For the test, this
# preamble makes it treat gloo on the CPU as a device cluster so that its FSDP2 path (fully_shard on a CPU mesh)
# runs; torch itself supports FSDP2 on CPU with gloo.
FSDP_ON_CPU = """
import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType
_prepare_backend = PartialState._prepare_backend
def _gloo_as_device(self, cpu=False, sagemaker_dp=False, backend=None):
    backend, kind = _prepare_backend(self, cpu, sagemaker_dp, backend)
    return ("gloo", DistributedType.MULTI_GPU) if kind == DistributedType.NO else (backend, kind)
def _cpu(self):
    self.device = torch.device("cpu")
PartialState._prepare_backend, PartialState.set_device = _gloo_as_device, _cpu
"""


def launch(inputs, tmp_path, cfg: ContinualConfig, out: Path, options: list[str], preamble: str = "",
           env: dict | None = None, interrupt_at: int | None = None) -> dict:
    """Run continual_learning under `accelerate launch` with 2 processes; with `interrupt_at`, stop there first
    and resume in the same processes. Returns the result."""
    script = tmp_path / f"launch-{out.name}.py"
    script.write_text(preamble + textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_continual import ListTasks
        from ke.continual import ContinualConfig, continual_learning
        from ke.knowledge import load_fictional_knowledge
        cfg = ContinualConfig(**json.loads({json.dumps(json.dumps(asdict(cfg)))}))
        args = ({str(inputs.model)!r}, {str(inputs.corpus)!r}, load_fictional_knowledge({str(inputs.root / 'knowledge')!r}),
                ListTasks(json.load(open({str(inputs.root / 'tasks.json')!r}))), cfg, {str(out)!r})
        if {interrupt_at!r} is not None:
            assert continual_learning(*args, progress=False, stop_after={interrupt_at!r}) is None
        continual_learning(*args, progress=False)
    """))
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run([str(accelerate), "launch", *options, "--num_processes", "2", "--num_machines", "1",
                           "--dynamo_backend", "no", str(script)], env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                         **(env or {})},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def assert_same_run(one: dict, two: dict, tmp_path, names: tuple[str, str], start: Path) -> None:
    """Equal K, P and loss curves and final weights up to float reordering in the gradient reductions."""
    a, b = (load_file(str(tmp_path / name / "model/model.safetensors")) for name in names)
    first = load_file(str(start / "model.safetensors"))
    moved = max((a[k] - first[k]).abs().max().item() for k in a)
    assert a.keys() == b.keys()
    differ = max((a[k] - b[k]).abs().max().item() for k in a)
    assert differ < 1e-5 and differ < 1e-3 * moved
    assert [p["step"] for p in two["curve"]] == [p["step"] for p in one["curve"]]
    for key in ("K", "P", "train_loss"):
        assert [p[key] for p in two["curve"]] == pytest.approx([p[key] for p in one["curve"]], abs=1e-5)


def test_data_parallel_with_accumulation_matches_one_process(inputs, tmp_path):
    """2 CPU processes (gloo) x 2 micro-batches of 2 rows, interrupted and resumed, give the run of one process
    with the whole 8-row batch. On a CPU-only machine accelerate needs ACCELERATE_USE_CPU=1 with --multi_gpu:
    `--cpu` alone starts a single process unless mpirun is configured."""
    one = run(inputs, tmp_path / "one", batch_size=8, save_model=True)
    cfg = ContinualConfig(**{**SHORT, "batch_size": 8, "micro_batch_size": 2, "save_model": True})
    two = launch(inputs, tmp_path, cfg, tmp_path / "two", ["--multi_gpu", "--mixed_precision", "no",
                                                           "--main_process_port", "29517"],
                 env={"ACCELERATE_USE_CPU": "1"}, interrupt_at=6)
    assert two["provenance"]["processes"] == 2 and two["provenance"]["accumulation"] == 2
    assert one["provenance"]["processes"] == 1 and one["provenance"]["accumulation"] == 1
    assert_same_run(one, two, tmp_path, ("one", "two"), inputs.model)
    logs = [[json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
            for name in ("one", "two")]
    assert [e["step"] for e in logs[1]] == list(range(1, 9))  # the resumed run's log holds each update once
    for key in ("loss", "grad_norm"):
        assert [e[key] for e in logs[1]] == pytest.approx([e[key] for e in logs[0]], rel=1e-5)


def test_fsdp_config_trains_and_saves_full_weights(inputs, tmp_path):
    """ke/configs/fsdp.yaml: FSDP2 over 2 processes (sharded parameters and optimizer state, sharded resume state)
    gives the one-process run and saves full weights that load as a normal checkpoint."""
    from ke.continual import FSDP_CONFIG
    one = run(inputs, tmp_path / "one", save_model=True)
    cfg = ContinualConfig(**{**SHORT, "save_model": True})
    two = launch(inputs, tmp_path, cfg, tmp_path / "fsdp", ["--config_file", str(FSDP_CONFIG),
                                                            "--main_process_port", "29518"],
                 preamble=FSDP_ON_CPU, interrupt_at=6)
    assert two["provenance"]["distributed"] == "DistributedType.FSDP" and two["provenance"]["processes"] == 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "fsdp/train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # resumed from the sharded state of step 4
    assert_same_run(one, two, tmp_path, ("one", "fsdp"), inputs.model)
    loaded = load_model(str(tmp_path / "fsdp" / "model"))
    config = json.loads((tmp_path / "fsdp" / "model" / "config.json").read_text())
    assert config["architectures"] == ["OlmoForCausalLM"]
    assert sum(p.numel() for p in loaded.model.parameters()) == \
        sum(p.numel() for p in load_model(str(inputs.model)).model.parameters())
