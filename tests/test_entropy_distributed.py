"""ke.entropy under `accelerate launch` with 2 CPU processes (gloo) against the same measurements in one process:
documents split within one checkpoint (sums all-reduced), and checkpoints split across processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from conftest import make_texts, save_tiny_model
from ke.entropy import EntropySettings, load_coefficients, load_per_document, run_entropy, run_entropy_many

REPO = Path(__file__).resolve().parents[1]
SETTINGS = EntropySettings(seq_len=32, batch_size=2, attention=True, ntp=True, relu=True, per_document=True)
DOCS = make_texts(9, seed=3, min_words=2, max_words=40)  # odd: the processes get 5 and 4 documents
SCALARS = ("knowledge_entropy", "relu_knowledge_entropy", "attention_entropy", "ntp_entropy")
LISTS = ("layer_entropy", "relu_layer_entropy", "layer_attention_entropy", "layer_top1_share")

SCRIPT = """
import json, sys
from ke.entropy import EntropySettings, run_entropy, run_entropy_many
from accelerate import PartialState
cfg = json.load(open(sys.argv[1]))
settings, out = EntropySettings(**cfg["settings"]), cfg["out"]
record = run_entropy(cfg["checkpoints"][0], cfg["data"], out + "/one", settings=settings, progress=False)
json.dump(record, open(f"{out}/returned_{PartialState().process_index}.json", "w"))
run_entropy_many(None, cfg["checkpoints"], cfg["data"], out + "/by_checkpoint", settings=settings, progress=False)
run_entropy_many(None, cfg["checkpoints"], cfg["data"], out + "/by_document", settings=settings, split="documents",
                 progress=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relative(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def launched(tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    checkpoints = [str(save_tiny_model("olmo", tokenizer_dir, root / f"step{s}", seed=s)) for s in (0, 1, 2)]
    data = root / "docs.txt"
    data.write_text("\n".join(DOCS))
    (root / "two").mkdir()
    config = root / "config.json"
    config.write_text(json.dumps({"settings": asdict(SETTINGS), "checkpoints": checkpoints, "data": str(data),
                                  "out": str(root / "two")}))
    script = root / "launch.py"
    script.write_text(textwrap.dedent(SCRIPT))
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                           str(free_port()), str(script), str(config)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one = run_entropy(checkpoints[0], str(data), root / "one", settings=SETTINGS, progress=False)
    many = run_entropy_many(None, checkpoints, str(data), root / "many", settings=SETTINGS, progress=False)
    return root, one, many


def assert_same_measurement(two: dict, one: dict, tolerance: float = 1e-6):
    assert (two["num_docs"], two["num_tokens"]) == (one["num_docs"], one["num_tokens"])
    for name in SCALARS + LISTS:
        assert relative(two[name], one[name]) < tolerance, name
    assert relative(two["head_attention_entropy"], one["head_attention_entropy"]) < tolerance


def test_documents_split_over_two_processes_give_the_one_process_result(launched):
    root, one, _ = launched
    two = json.loads((root / "two" / "one" / "entropy.json").read_text())
    assert two["provenance"]["num_processes"] == 2 and one["provenance"]["num_processes"] == 1
    assert_same_measurement(two, one)
    assert relative(load_coefficients(root / "two" / "one"), load_coefficients(root / "one")) < 1e-6
    rows_two, rows_one = load_per_document(root / "two" / "one"), load_per_document(root / "one")
    assert rows_two.shape == rows_one.shape == (len(DOCS), *load_coefficients(root / "one").shape)
    assert relative(rows_two, rows_one) < 1e-6  # gathered back in document order
    differences = {name: relative(two[name], one[name]) for name in SCALARS + ("head_attention_entropy",)}
    differences["coefficients"] = relative(load_coefficients(root / "two" / "one"), load_coefficients(root / "one"))
    differences["per_document"] = relative(rows_two, rows_one)
    print("\n2 vs 1 process, relative difference:", json.dumps(differences))


def test_every_process_returns_the_complete_record(launched):
    root, _, _ = launched
    returned = [json.loads((root / "two" / f"returned_{r}.json").read_text()) for r in (0, 1)]
    assert returned[0] == returned[1] == json.loads((root / "two" / "one" / "entropy.json").read_text())


def test_checkpoints_split_over_two_processes(launched):
    """Three unfinished checkpoints, two processes: process 0 measures the first and third, process 1 the second,
    each alone."""
    root, _, many = launched
    for index, (name, alone) in enumerate(zip(("step0", "step1", "step2"), many)):
        two = json.loads((root / "two" / "by_checkpoint" / name / "entropy.json").read_text())
        assert two["provenance"]["process_index"] == index % 2 and two["provenance"]["num_processes"] == 1
        assert two["key"] == alone["key"]
        assert_same_measurement(two, alone, tolerance=1e-12)  # the same computation on one process


def test_checkpoints_in_turn_with_documents_split(launched):
    root, _, many = launched
    for name, alone in zip(("step0", "step1", "step2"), many):
        two = json.loads((root / "two" / "by_document" / name / "entropy.json").read_text())
        assert two["provenance"]["num_processes"] == 2 and two["provenance"]["process_index"] == 0
        assert_same_measurement(two, alone)
