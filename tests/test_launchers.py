"""Every launcher joins: `ke entropy` (checkpoints split, documents split) and `ke continual` launched through the
real CLI with 2 CPU processes by torchrun and by `accelerate launch --multi_gpu` (without ACCELERATE_USE_CPU) give
the 1-process result; `accelerate launch --cpu`, which starts one process whatever --num_processes says, is refused.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from conftest import make_texts, save_tiny_model
from ke import cli
from test_continual import FILLER, SHORT, knowledge

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = ("step0", "step1", "step2")  # 3 checkpoints over 2 processes: process 0 measures 2, process 1 one
SCALARS = ("knowledge_entropy", "attention_entropy", "ntp_entropy")
ENTROPY = ["--data", "{root}/docs.txt", "--seq-len", "32", "--batch-size", "2", "--attention", "--ntp",
           "--per-document", *(a for name in CHECKPOINTS for a in ("--revision", name))]
CONTINUAL = ["--corpus", "{root}/corpus", "--knowledge", "{root}/knowledge", "--no-progress",
             *(a for k, v in SHORT.items() for a in (f"--{k.replace('_', '-')}", str(v)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(name: str) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if name == "torchrun":
        return [str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())]
    accelerate = [str(bin_dir / "accelerate"), "launch", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    return accelerate + (["--multi_gpu"] if name == "accelerate --multi_gpu" else ["--cpu"])


def launch(name: str, command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("ACCELERATE_USE_CPU", None)  # what the user of a plain shell has
    return subprocess.run([*launcher(name), "-m", "ke.cli", *command], env=env, capture_output=True, text=True,
                          timeout=300)


def args(template: list[str], root: Path) -> list[str]:
    return [a.format(root=root) for a in template]


@pytest.fixture(scope="module")
def inputs(tokenizer_dir, tmp_path_factory):
    """A run folder of 3 tiny checkpoints, 9 documents, a corpus and fictional knowledge; and the 1-process
    results of each command, through the same CLI in this process."""
    root = tmp_path_factory.mktemp("launchers")
    for seed, name in enumerate(CHECKPOINTS):
        save_tiny_model("olmo", tokenizer_dir, root / "run" / name, seed=seed)
    (root / "docs.txt").write_text("\n".join(make_texts(9, seed=3, min_words=2, max_words=40)))
    rng = torch.Generator().manual_seed(1)
    texts = [" ".join(FILLER[i] for i in torch.randint(len(FILLER), (int(n),), generator=rng))
             for n in torch.randint(5, 30, (400,), generator=rng)]
    Dataset.from_dict({"text": texts}).save_to_disk(str(root / "corpus"))
    knowledge(0).save(root / "knowledge")
    assert cli.main(["entropy", str(root / "run"), *args(ENTROPY, root), "--out", str(root / "one-entropy")]) == 0
    assert cli.main(["continual", str(root / "run" / "step0"), *args(CONTINUAL, root),
                     "--out", str(root / "one-continual")]) == 0
    return root


def entropy_records(folder: Path) -> list[dict]:
    return [json.loads((folder / name / "entropy.json").read_text()) for name in CHECKPOINTS]


def per_document(folder: Path, name: str) -> torch.Tensor:
    from ke.entropy import load_per_document
    return load_per_document(folder / name)


def assert_same_entropy(two: dict, one: dict, tolerance: float):
    assert (two["num_docs"], two["num_tokens"]) == (one["num_docs"], one["num_tokens"]) == (9, one["num_tokens"])
    for name in SCALARS:
        assert two[name] == pytest.approx(one[name], rel=tolerance, abs=0), name
    for name in ("layer_entropy", "head_attention_entropy"):
        assert torch.tensor(two[name]).double().sub(torch.tensor(one[name])).abs().max() < tolerance * 10, name


@pytest.mark.parametrize("name", ["torchrun", "accelerate --multi_gpu"])
def test_entropy_checkpoints_split(inputs, tmp_path, name):
    """Auto split with 3 checkpoints: process r measures checkpoints r, r + 2 alone, the same computation as one
    process does; nothing is measured twice."""
    done = launch(name, [*["entropy", str(inputs / "run")], *args(ENTROPY, inputs), "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    for index, (two, one) in enumerate(zip(entropy_records(tmp_path), entropy_records(inputs / "one-entropy"))):
        assert two["provenance"]["process_index"] == index % 2 and two["provenance"]["num_processes"] == 1
        assert_same_entropy(two, one, 1e-12)


@pytest.mark.parametrize("name", ["torchrun", "accelerate --multi_gpu"])
def test_entropy_documents_split(inputs, tmp_path, name):
    """--split documents: every checkpoint's 9 documents split 5 + 4, sums all-reduced, process 0 writes."""
    done = launch(name, [*["entropy", str(inputs / "run")], *args(ENTROPY, inputs), "--split", "documents",
                         "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    for two, one in zip(entropy_records(tmp_path), entropy_records(inputs / "one-entropy")):
        assert two["provenance"]["num_processes"] == 2 and two["provenance"]["process_index"] == 0
        assert one["provenance"]["num_processes"] == 1
        assert_same_entropy(two, one, 1e-6)
    for checkpoint in CHECKPOINTS:  # the documents' rows gathered back in document order
        rows, alone = per_document(tmp_path, checkpoint), per_document(inputs / "one-entropy", checkpoint)
        assert rows.shape == alone.shape and rows.shape[0] == 9
        assert (rows - alone).abs().max() < 1e-6 * alone.abs().max()


@pytest.mark.parametrize("name", ["torchrun", "accelerate --multi_gpu"])
def test_continual(inputs, tmp_path, name):
    """Each process takes half of every 6-row global batch; the gradients are averaged over both."""
    done = launch(name, ["continual", str(inputs / "run" / "step0"), *args(CONTINUAL, inputs), "--out",
                         str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "result.json").read_text())
    one = json.loads((inputs / "one-continual" / "result.json").read_text())
    assert two["provenance"]["processes"] == 2 and one["provenance"]["processes"] == 1
    assert two["provenance"]["distributed"] == "DistributedType.MULTI_CPU"
    assert [p["step"] for p in two["curve"]] == [p["step"] for p in one["curve"]] == [0, 4, 8]
    moved = abs(one["curve"][-1]["train_loss"] - one["curve"][1]["train_loss"])
    assert moved > 1e-2  # training changed the loss, so equal curves say something
    for key in ("K", "train_loss"):
        assert [p[key] for p in two["curve"]] == pytest.approx([p[key] for p in one["curve"]], abs=1e-5)


def test_accelerate_cpu_starts_one_process_and_is_refused(inputs, tmp_path):
    """`accelerate launch --cpu --num_processes 2` runs its script once, with no WORLD_SIZE: measuring alone would
    silently ignore the 2 processes asked for, so the command refuses in one sentence and writes nothing."""
    done = launch("accelerate --cpu", [*["entropy", str(inputs / "run")], *args(ENTROPY, inputs),
                                       "--out", str(tmp_path / "out")])
    assert done.returncode != 0
    assert "ke entropy: error: `accelerate launch --cpu` (or without --multi_gpu) started one process" in done.stderr
    assert "Traceback" not in done.stderr.split("ke entropy: error:")[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2", "MASTER_PORT": "29999"}, "WORLD_SIZE is 2 but RANK or MASTER_ADDR is not set"),
    ({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}, "started one process"),
])
def test_a_launch_that_cannot_join_is_refused_before_any_state(monkeypatch, env, message):
    from accelerate import PartialState

    from ke.distributed import state
    from ke.errors import UserError
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU", "PMI_SIZE",
                 "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    initialised = PartialState._shared_state != {}
    with pytest.raises(UserError, match=message):
        state()
    assert (PartialState._shared_state != {}) == initialised  # refused before accelerate set anything up
