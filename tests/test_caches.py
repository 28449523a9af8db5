"""Caches that cannot lie (ke.storage): every cached record carries the size and sha256 of the files it vouches
for; damaging or deleting any of them makes the next run recompute it, with a notice, to the same result. And keys
that survive growth: a config field added at its default leaves every key unchanged."""
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_texts
from ke.continual import ContinualConfig, continual_learning, run_key
from ke.entropy import EntropySettings, entropy_key, run_entropy
from ke.knowledge import load_fictional_knowledge
from ke.miniature.pretrain import PretrainConfig, pretrain
from ke.miniature.pretrain import run_key as pretrain_key
from ke.miniature.pretrain import train_tokenizer
from ke.models import hooks
from ke.resuscitate import resuscitate_checkpoint
from ke.storage import config_key, read_cached, write_cached

REPO = Path(__file__).resolve().parents[1]
DOCS = make_texts(6, seed=2, min_words=3, max_words=30)
SETTINGS = EntropySettings(seq_len=32, batch_size=3, per_document=True)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damaged_notice(stderr: str, path: Path) -> bool:
    return f"{path} was damaged or missing; recomputing" in stderr


# ----------------------------------------------------------------------------- storage

def test_a_record_vouches_for_its_files(tmp_path, capsys):
    artifact, record_path = tmp_path / "a.bin", tmp_path / "record.json"
    artifact.write_bytes(b"0123456789")
    record = write_cached({"x": 1}, record_path, {"k": 1}, files=[artifact])
    assert record["files"] == {"a.bin": {"size": 10, "sha256": hashlib.sha256(b"0123456789").hexdigest()}}
    assert read_cached(record_path, {"k": 1}) == record
    assert read_cached(record_path, {"k": 2}) is None and record_path.exists()  # other inputs: kept, no notice
    assert capsys.readouterr().err == ""
    artifact.write_bytes(b"0123456780")  # same size, other content
    assert read_cached(record_path, {"k": 1}) is None
    assert damaged_notice(capsys.readouterr().err, artifact) and not record_path.exists()
    artifact.write_bytes(b"0123456789")
    write_cached({"x": 1}, record_path, {"k": 1}, files=[artifact])
    artifact.unlink()
    assert read_cached(record_path, {"k": 1}) is None and damaged_notice(capsys.readouterr().err, artifact)
    record_path.write_text('{"x": 1, "ke')  # a cut-off record
    assert read_cached(record_path, {"k": 1}) is None and damaged_notice(capsys.readouterr().err, record_path)


def test_an_unchanged_file_is_hashed_once_per_process_and_a_rewritten_one_again(tmp_path, monkeypatch, capsys):
    import os
    import time

    from ke import storage
    hashed = []
    real = storage._sha256
    monkeypatch.setattr(storage, "_sha256", lambda path: hashed.append(Path(path).name) or real(path))
    artifact, record_path = tmp_path / "a.bin", tmp_path / "record.json"

    def rewrite(data: bytes, seconds_ago: float):
        artifact.write_bytes(data)            # in place: same inode
        os.utime(artifact, (time.time() - seconds_ago,) * 2)

    rewrite(b"0123456789", 60)
    record = write_cached({"x": 1}, record_path, {"k": 1}, files=[artifact])
    for _ in range(3):
        assert read_cached(record_path, {"k": 1}) == record
    assert hashed == ["a.bin"]                # once, when the record was written
    rewrite(b"0123456789", 50)                # the same bytes, a new mtime: hashed again, still intact
    assert read_cached(record_path, {"k": 1}) == record and read_cached(record_path, {"k": 1}) == record
    assert hashed == ["a.bin"] * 2
    rewrite(b"0123456780", 40)                # same size, other content, a new mtime
    assert read_cached(record_path, {"k": 1}) is None and damaged_notice(capsys.readouterr().err, artifact)
    assert hashed == ["a.bin"] * 3
    rewrite(b"0123456789", 0)                 # just written: hashed on every read until its mtime has settled
    record = write_cached({"x": 1}, record_path, {"k": 1}, files=[artifact])
    assert read_cached(record_path, {"k": 1}) == record and read_cached(record_path, {"k": 1}) == record
    assert hashed == ["a.bin"] * 6
    assert record["files"]["a.bin"]["sha256"] == hashlib.sha256(b"0123456789").hexdigest()


# ----------------------------------------------------------------------------- keys

def grown(cls, **extra_default):
    """A subclass of dataclass `cls` with one more field at its default (a config that grew)."""
    name, default = next(iter(extra_default.items()))
    return dataclasses.make_dataclass(f"Grown{cls.__name__}", [(name, type(default), dataclasses.field(default=default))],
                                      bases=(cls,))


def test_config_key_keeps_only_changed_fields():
    assert config_key(PretrainConfig()) == {}
    assert config_key(PretrainConfig(lr=1e-3, save_steps=[0, 5])) == {"lr": 1e-3, "save_steps": [0, 5]}
    assert config_key(ContinualConfig(betas=[0.9, 0.95])) == {}  # a list from YAML equals the tuple default
    assert config_key(ContinualConfig(micro_batch_size=2), leave_out=("micro_batch_size",)) == {}


@pytest.mark.parametrize("field_name,changed", [("dropout", 0.5), ("label", "other")])
def test_a_field_added_at_its_default_keeps_every_key(tmp_path, field_name, changed):
    default = 0.0 if field_name == "dropout" else "plain"
    cfg = PretrainConfig(steps=20, warmup_steps=2, save_steps=[0, 10])
    big = grown(PretrainConfig, **{field_name: default})(steps=20, warmup_steps=2, save_steps=[0, 10])
    assert pretrain_key(big) == pretrain_key(cfg)
    assert pretrain_key(dataclasses.replace(big, **{field_name: changed})) != pretrain_key(cfg)
    assert pretrain_key(dataclasses.replace(cfg, lr=1e-3)) != pretrain_key(cfg)

    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS))
    settings = EntropySettings(seq_len=64)
    big_settings = grown(EntropySettings, **{field_name: default})(seq_len=64)
    key = entropy_key(str(tmp_path), None, str(data), 5, "float32", settings)
    assert entropy_key(str(tmp_path), None, str(data), 5, "float32", big_settings) == key
    assert entropy_key(str(tmp_path), None, str(data), 5, "float32",
                       dataclasses.replace(big_settings, **{field_name: changed})) != key
    assert entropy_key(str(tmp_path), None, str(data), 5, "float32", EntropySettings(seq_len=65)) != key

    corpus = types.SimpleNamespace(_fingerprint="corpus")
    knowledge = types.SimpleNamespace(fingerprint=lambda: "knowledge")
    continual = ContinualConfig(steps=8, injections=4)
    big_continual = grown(ContinualConfig, **{field_name: default})(steps=8, injections=4)
    key = run_key("start", corpus, knowledge, None, continual, None)
    assert run_key("start", corpus, knowledge, None, big_continual, None) == key
    assert run_key("start", corpus, knowledge, None, dataclasses.replace(big_continual, **{field_name: changed}),
                   None) != key
    assert run_key("start", corpus, knowledge, None, dataclasses.replace(continual, lr=1e-3), None) != key


# ----------------------------------------------------------------------------- entropy measurements

def test_damaged_or_deleted_measurement_files_are_measured_again(tiny_models, tmp_path, capsys):
    data, out, source = tmp_path / "docs.txt", tmp_path / "out", str(tiny_models("olmo"))
    data.write_text("\n".join(DOCS))
    first = run_entropy(source, str(data), out, settings=SETTINGS, progress=False)
    assert set(first["files"]) == {"coefficients.safetensors", "per_document.safetensors"}
    hashes = {name: sha(out / name) for name in first["files"]}
    assert hashes == {name: check["sha256"] for name, check in first["files"].items()}
    reference = load_file(str(out / "coefficients.safetensors"))["mean_abs_coefficients"].clone()  # not mmapped
    assert run_entropy(source, str(data), out, settings=SETTINGS, progress=False) == first  # intact: cached
    for name in ("coefficients.safetensors", "per_document.safetensors"):
        for damage in (truncate, Path.unlink):
            damage(out / name)
            again = run_entropy(source, str(data), out, settings=SETTINGS, progress=False)
            assert damaged_notice(capsys.readouterr().err, out / name)
            assert {name: sha(out / name) for name in hashes} == hashes  # the same files again
            assert again["knowledge_entropy"] == first["knowledge_entropy"] and again["files"] == first["files"]
    assert torch.equal(load_file(str(out / "coefficients.safetensors"))["mean_abs_coefficients"], reference)


def test_book_measurement_vouches_for_its_per_document_file_and_bootstrap(tiny_models, tmp_path, capsys):
    from ke.book.execute import _measure

    data, out, source = tmp_path / "docs.txt", tmp_path / "m", str(tiny_models("olmo"))
    data.write_text("\n".join(DOCS))
    checkpoint = types.SimpleNamespace(locate=lambda: (source, None), dtype="float32")
    item = types.SimpleNamespace(checkpoint=checkpoint, data=str(data), settings=SETTINGS, max_docs=None,
                                 device="cpu", out_dir=out, bootstrap=50)
    first = _measure(item, False)
    capsys.readouterr()
    assert set(first["files"]) == {"coefficients.safetensors", "per_document.safetensors"}  # kept for validity
    assert _measure(item, False) == first and capsys.readouterr().err == ""  # cached, nothing re-measured
    for name in ("coefficients.safetensors", "per_document.safetensors"):
        for damage in (truncate, Path.unlink):
            damage(out / name)
            again = _measure(item, False)
            assert damaged_notice(capsys.readouterr().err, out / name)
            assert again["files"] == first["files"] and again["bootstrap"] == first["bootstrap"]
    truncate(out / "bootstrap.json")  # a single JSON: its own damage is noticed and it is recomputed
    again = _measure(item, False)
    assert damaged_notice(capsys.readouterr().err, out / "bootstrap.json")
    assert again["bootstrap"] == first["bootstrap"] and again["knowledge_entropy"] == first["knowledge_entropy"]


def test_cli_says_cached_wrote_and_recomputes_a_damaged_file(tiny_models, tmp_path):
    data, out = tmp_path / "docs.txt", tmp_path / "out"
    data.write_text("\n".join(DOCS))
    command = [sys.executable, "-m", "ke.cli", "entropy", str(tiny_models("olmo")), "--data", str(data),
               "--seq-len", "32", "--batch-size", "3", "--out", str(out)]

    def run():
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1], done.stderr

    assert run()[0].startswith(f"wrote {out}/entropy.json")
    coefficients = out / "coefficients.safetensors"
    reference = sha(coefficients)
    assert run()[0].startswith(f"cached {out}/entropy.json")
    truncate(coefficients)
    line, stderr = run()
    assert line.startswith("wrote") and damaged_notice(stderr, coefficients) and sha(coefficients) == reference


# ----------------------------------------------------------------------------- pretraining checkpoints

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from datasets import Dataset
    root = tmp_path_factory.mktemp("corpus")
    texts = make_texts(160, seed=3, min_words=5, max_words=30)
    Dataset.from_dict({"text": texts}).save_to_disk(str(root / "corpus"))
    train_tokenizer(texts, 300, root / "tok")
    return root / "corpus", root / "tok"


def step_files(run: Path) -> dict:
    return {str(p.relative_to(run)): sha(p) for p in sorted(run.glob("step*/*"))}


def test_damaged_or_deleted_checkpoints_are_trained_again(corpus, tmp_path, capsys):
    corpus_dir, tok_dir = corpus
    cfg = PretrainConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=32, batch_size=4,
                         steps=8, warmup_steps=2, save_steps=[0, 4, 8])
    run = tmp_path / "run"
    pretrain(cfg, corpus_dir, tok_dir, run, progress=False)
    marker = json.loads((run / "step4" / "ke_checkpoint.json").read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(marker["files"])
    reference = {k: v for k, v in step_files(run).items() if not k.endswith("ke_checkpoint.json")}
    capsys.readouterr()
    for damage in (lambda: truncate(run / "step4" / "model.safetensors"),
                   lambda: (run / "step8" / "config.json").unlink(),
                   lambda: shutil.rmtree(run / "step4"),
                   lambda: truncate(run / "resume_state.pt") or truncate(run / "step8" / "model.safetensors")):
        damage()
        pretrain(cfg, corpus_dir, tok_dir, run, progress=False)
        assert "was damaged or missing; recomputing" in capsys.readouterr().err
        files = step_files(run)
        assert {k: v for k, v in files.items() if not k.endswith("ke_checkpoint.json")} == reference
    mtimes = {p: p.stat().st_mtime_ns for p in run.glob("step*/*")}
    pretrain(cfg, corpus_dir, tok_dir, run, progress=False)  # intact: returned at once
    assert {p: p.stat().st_mtime_ns for p in run.glob("step*/*")} == mtimes


# ----------------------------------------------------------------------------- resuscitated checkpoints

def test_damaged_or_deleted_resuscitated_files_are_made_again(tiny_models, tmp_path, capsys):
    source = tiny_models("olmo")
    layers = json.loads((source / "config.json").read_text())
    coefficients = tmp_path / "coefficients.safetensors"
    shape = (layers["num_hidden_layers"], layers["intermediate_size"])
    save_file({"mean_abs_coefficients": torch.rand(shape, generator=torch.Generator().manual_seed(0)) + 0.1},
              str(coefficients))
    out = resuscitate_checkpoint(str(source), coefficients, 0.5, 2.0, tmp_path / "out")
    reference = {p.name: sha(p) for p in out.iterdir() if p.name != "ke_resuscitation.json"}
    assert set(json.loads((out / "ke_resuscitation.json").read_text())["files"]) == set(reference)
    for damage in (truncate, Path.unlink):
        for name in ("model.safetensors", "tokenizer.json"):
            damage(out / name)
            resuscitate_checkpoint(str(source), coefficients, 0.5, 2.0, out)
            assert damaged_notice(capsys.readouterr().err, out / name)
            assert {p.name: sha(p) for p in out.iterdir() if p.name != "ke_resuscitation.json"} == reference


# ----------------------------------------------------------------------------- continual results

SHORT = dict(steps=4, batch_size=4, seq_len=32, lr=1e-2, injections=2, eval_every=2, save_model=True)


def test_damaged_or_deleted_continual_files_are_trained_again(tiny_models, fictional_knowledge_tiny, tmp_path,
                                                              capsys):
    corpus, knowledge = fictional_knowledge_tiny
    out = tmp_path / "out"
    cfg = ContinualConfig(**SHORT)

    def run():
        return continual_learning(tiny_models("olmo"), corpus, knowledge, None, cfg, out, progress=False)

    first = run()
    assert set(first["files"]) >= {"train_log.jsonl", "model/model.safetensors", "model/config.json"}
    strip = lambda r: {k: v for k, v in r.items() if k != "provenance"}  # noqa: E731 (provenance holds seconds)
    for damage in (truncate, Path.unlink):
        for name in ("model/model.safetensors", "train_log.jsonl"):
            damage(out / name)
            again = run()
            assert damaged_notice(capsys.readouterr().err, out / name)
            assert strip(again) == strip(first)
    truncate(out / "result.json")
    assert strip(run()) == strip(first) and damaged_notice(capsys.readouterr().err, out / "result.json")


@pytest.fixture(scope="module")
def fictional_knowledge_tiny(tmp_path_factory):
    from datasets import Dataset

    from ke.knowledge import FictionalKnowledge
    root = tmp_path_factory.mktemp("continual")
    Dataset.from_dict({"text": make_texts(60, seed=4, min_words=10, max_words=40)}).save_to_disk(str(root / "c"))
    fact = {"train_context": "the red company was born in rome .", "paraphrases": ["born in rome , the red company ."] * 9,
            "mem_input": ["the red company was born in"], "mem_target": ["rome"],
            "gen_input": ["the red company is from"], "gen_target": ["rome"],
            "hard_gen_input": ["the red company"], "hard_gen_target": ["was born in rome"]}
    FictionalKnowledge([fact], [fact]).save(root / "k")
    return root / "c", load_fictional_knowledge(root / "k")


# ----------------------------------------------------------------------------- hooks

def test_hooks_are_removed_however_the_block_ends():
    linear = torch.nn.Linear(2, 2)
    seen = []
    with pytest.raises(RuntimeError):
        with hooks(forward=[(linear, lambda m, a, out: seen.append("forward"))],
                   pre=[(linear, lambda m, a: seen.append("pre"))]):
            linear(torch.zeros(1, 2))
            raise RuntimeError
    assert seen == ["pre", "forward"]
    linear(torch.zeros(1, 2))
    assert seen == ["pre", "forward"] and not linear._forward_hooks and not linear._forward_pre_hooks
