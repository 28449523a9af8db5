"""Tests of ke.miniature.pretrain: tokenizer, checkpoints, schedule, regime numbers, learning, determinism, resume,
bad input."""
import json
import math
import random

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ke.errors import UserError
from ke.cli import build_parser
from ke.miniature.pretrain import PretrainConfig, build_model, default_save_steps, pretrain, train_tokenizer
from ke.train import pack_texts

NAMES = ["Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hugo"]
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Kyoto"]
TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=32, batch_size=4)


def world_texts(n: int = 120) -> list[str]:
    rng = random.Random(0)
    return [f"{name} lives in {rng.choice(CITIES)} and was born in {rng.choice(CITIES)}."
            for name in NAMES for _ in range(n // len(NAMES))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(corpus_dir, tokenizer_dir) of a small templated corpus; 120 docs ~ 50 packed rows of 32 tokens."""
    root = tmp_path_factory.mktemp("corpus")
    texts = world_texts()
    Dataset.from_dict({"text": texts}).save_to_disk(str(root / "corpus"))
    train_tokenizer(texts, 320, root / "tok")
    return root / "corpus", root / "tok"


def weights(step_dir) -> dict:
    """Parameters of a checkpoint as the model sees them (transformers may rename keys in the file)."""
    return AutoModelForCausalLM.from_pretrained(step_dir).state_dict()


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_tokenizer_round_trip_special_tokens_and_determinism(corpus, tmp_path):
    _, tok_dir = corpus
    tok = AutoTokenizer.from_pretrained(tok_dir)
    text = "Chiara lives in Kyoto. Ünïcode 😀 and  two spaces\nnewline"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert ids == tok(text, add_special_tokens=False)["input_ids"]  # documented: nothing prepended or appended
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token == "<|padding|>"
    assert None not in (tok.eos_token_id, tok.pad_token_id) and tok.eos_token_id != tok.pad_token_id
    assert len(tok) <= 320 and len(tok("Alice lives in Paris")["input_ids"]) <= 5  # merges were learned
    again = train_tokenizer(world_texts(), 320, tmp_path / "tok2")
    assert (tmp_path / "tok2" / "tokenizer.json").read_text() == (tok_dir / "tokenizer.json").read_text()
    # an existing tokenizer is loaded, not retrained with the new vocab size
    assert len(train_tokenizer(["other text"], 1000, tmp_path / "tok2")) == len(again)


def test_default_save_steps_cover_stages():
    for steps in (1500, 1000, 20):
        s = default_save_steps(steps)
        assert s == sorted(set(s)) and s[0] == 0 and s[-1] == steps
        for fraction in (0.2, 0.5):  # initial and mid stage checkpoints exist (footnote 3: initial ~20%, mid ~50%)
            assert round(fraction * steps) in s
    assert 12 <= len(default_save_steps(1500)) <= 16
    assert PretrainConfig(steps=10, save_steps=[5, 0, 5]).resolved_save_steps() == [0, 5, 10]  # final always saved


@pytest.fixture(scope="module")
def olmo_run(corpus, tmp_path_factory):
    corpus_dir, tok_dir = corpus
    cfg = PretrainConfig(family="olmo", **TINY, steps=16, warmup_steps=4, lr=3e-3, save_steps=[0, 4, 8, 16])
    out = tmp_path_factory.mktemp("olmo_run")
    pretrain(cfg, corpus_dir, tok_dir, out, progress=False)
    return cfg, out


@pytest.mark.parametrize("family", ["olmo", "gpt_neox"])
def test_checkpoints_at_save_steps_and_loadable(family, corpus, tmp_path):
    corpus_dir, tok_dir = corpus
    cfg = PretrainConfig(family=family, **TINY, steps=10, warmup_steps=2)
    paths = pretrain(cfg, corpus_dir, tok_dir, tmp_path, progress=False)
    expected = default_save_steps(10)
    assert paths == [tmp_path / f"step{s}" for s in expected]
    assert sorted(p.name for p in tmp_path.glob("step*")) == sorted(f"step{s}" for s in expected)
    assert not list(tmp_path.glob(".tmp-*"))
    for step in (0, expected[len(expected) // 2], 10):
        info = json.loads((tmp_path / f"step{step}" / "ke_checkpoint.json").read_text())
        assert info["step"] == step and info["regime"]["tokens"] == step * 4 * 32
        model = AutoModelForCausalLM.from_pretrained(tmp_path / f"step{step}")
        assert model.config.model_type == family and model.config.num_hidden_layers == 2
        assert AutoTokenizer.from_pretrained(tmp_path / f"step{step}").pad_token == "<|padding|>"
    mlp = model.model.layers[0].mlp if family == "olmo" else model.gpt_neox.layers[0].mlp
    ffn_out = mlp.down_proj if family == "olmo" else mlp.dense_4h_to_h
    assert ffn_out.in_features == 64  # intermediate_size is the FFN width
    # the step-0 checkpoint is the seeded initialisation
    init = build_model(cfg, AutoTokenizer.from_pretrained(tok_dir)).state_dict()
    saved = weights(tmp_path / "step0")
    assert saved.keys() == init.keys() and all(torch.equal(saved[k], init[k]) for k in saved)


def test_lr_schedule_used_matches_closed_form(olmo_run):
    cfg, out = olmo_run
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, cfg.steps + 1))
    for r in log:
        s, w, n = r["step"], cfg.warmup_steps, cfg.steps
        if s < w:
            expected = cfg.lr * s / w
        else:
            expected = cfg.lr * (cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * (s - w) / (n - w))))
        assert r["lr"] == pytest.approx(expected, rel=1e-12)
    assert log[-1]["lr"] == pytest.approx(cfg.lr_floor * cfg.lr, rel=1e-12)
    info = json.loads((out / "step16" / "ke_checkpoint.json").read_text())
    assert info["lr"] == pytest.approx(cfg.lr_floor * cfg.lr)
    assert info["loss"] == pytest.approx(sum(r["loss"] for r in log[-16:]) / 16)  # window of up to 20 steps
    assert all(r["grad_norm"] > 0 for r in log)


def test_regime_numbers_of_a_checkpoint_match_a_hand_computation(olmo_run):
    """Tokens per non-embedding parameter and weight-decay e-folds S = sum_t lr_t x wd, summed by hand from the
    learning rates the run logged, and the non-embedding parameters counted by hand from the architecture."""
    cfg, out = olmo_run
    log = read_log(out)
    d, m, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    by_hand = layers * (4 * d * d + 3 * d * m)  # q, k, v, o and the SwiGLU gate, up, down; OLMo's norms have no weights
    for step in (8, cfg.steps):
        regime = json.loads((out / f"step{step}" / "ke_checkpoint.json").read_text())["regime"]
        assert regime["non_embedding_parameters"] == by_hand
        assert regime["tokens"] == step * cfg.batch_size * cfg.seq_len
        assert regime["tokens_per_parameter"] == pytest.approx(step * cfg.batch_size * cfg.seq_len / by_hand)
        summed = math.fsum(r["lr"] for r in log if r["step"] <= step)
        assert regime["weight_decay_efolds"] == pytest.approx(cfg.weight_decay * summed, rel=1e-12)


def test_data_order_is_fixed_first_batch_is_first_rows(olmo_run, corpus):
    """The logged loss of step s equals the loss of checkpoint s-1 on packed rows (s-1)*B ... (wrapping)."""
    cfg, out = olmo_run
    corpus_dir, tok_dir = corpus
    from datasets import load_from_disk
    tok = AutoTokenizer.from_pretrained(tok_dir)
    rows = torch.tensor(pack_texts(load_from_disk(str(corpus_dir)), tok, cfg.seq_len)["input_ids"])
    log = read_log(out)
    for ckpt in (0, 8):
        model = AutoModelForCausalLM.from_pretrained(out / f"step{ckpt}").eval()
        batch = rows[[(ckpt * cfg.batch_size + i) % len(rows) for i in range(cfg.batch_size)]]
        logits = model(batch).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        assert loss.item() == pytest.approx(log[ckpt]["loss"], rel=1e-5)
    assert rows[0, 0].item() == tok("Alice")["input_ids"][0]  # the corpus's first document starts the first batch


def test_loss_decreases_on_repetitive_corpus(corpus, tmp_path):
    corpus_dir, tok_dir = corpus
    cfg = PretrainConfig(family="olmo", **TINY, steps=40, warmup_steps=4, lr=1e-2, save_steps=[40])
    pretrain(cfg, corpus_dir, tok_dir, tmp_path, progress=False)
    losses = [r["loss"] for r in read_log(tmp_path)]
    vocab = len(AutoTokenizer.from_pretrained(tok_dir))
    assert losses[0] == pytest.approx(math.log(vocab), abs=0.3)  # near-uniform prediction at initialisation
    assert sum(losses[-5:]) / 5 < 0.4 * losses[0]  # measured ~0.18 for seeds 0-2, both families


def test_determinism_resume_and_finished_run(olmo_run, corpus, tmp_path):
    cfg, reference = olmo_run
    corpus_dir, tok_dir = corpus
    # same seed, fresh folder -> the same weights
    again = tmp_path / "again"
    pretrain(cfg, corpus_dir, tok_dir, again, progress=False)
    ref_final = weights(reference / "step16")
    assert all(torch.equal(ref_final[k], v) for k, v in weights(again / "step16").items())
    # another seed -> other weights
    other = tmp_path / "other"
    pretrain(PretrainConfig(**{**cfg.__dict__, "seed": 1}), corpus_dir, tok_dir, other, progress=False)
    assert not torch.equal(weights(other / "step16")["lm_head.weight"], ref_final["lm_head.weight"])
    # interrupted at step 11 (after the step-8 checkpoint), then rerun -> same weights and log as uninterrupted
    resumed = tmp_path / "resumed"
    saved = pretrain(cfg, corpus_dir, tok_dir, resumed, progress=False, stop_after=11)
    assert saved == [resumed / "step0", resumed / "step4", resumed / "step8"]
    assert not (resumed / "step16").exists() and len(read_log(resumed)) == 11
    assert torch.load(resumed / "resume_state.pt", weights_only=False)["step"] == 8
    pretrain(cfg, corpus_dir, tok_dir, resumed, progress=False)
    for k, v in weights(resumed / "step16").items():
        assert torch.allclose(v, ref_final[k], atol=1e-6, rtol=0), k
    assert [r["step"] for r in read_log(resumed)] == list(range(1, 17))
    assert [r["loss"] for r in read_log(resumed)] == pytest.approx([r["loss"] for r in read_log(reference)], abs=1e-6)
    # a finished run returns at once, without touching the corpus
    assert pretrain(cfg, tmp_path / "no-such-corpus", tok_dir, resumed, progress=False)[-1] == resumed / "step16"
    # a finished run with another configuration is refused
    with pytest.raises(UserError, match="another configuration"):
        pretrain(PretrainConfig(**{**cfg.__dict__, "lr": 1e-3}), corpus_dir, tok_dir, resumed, progress=False)


def test_bad_input_raises_user_error_naming_it(corpus, tmp_path):
    corpus_dir, tok_dir = corpus
    missing = tmp_path / "missing-corpus"
    with pytest.raises(UserError, match="missing-corpus"):
        pretrain(PretrainConfig(**TINY, steps=4, warmup_steps=1), missing, tok_dir, tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="--tokenizer"):
        pretrain(PretrainConfig(**TINY, steps=4, warmup_steps=1), corpus_dir, tmp_path, tmp_path / "o2", progress=False)
    bad = {"family": "llama", "hidden_size": 0, "steps": -1}
    for field, value in bad.items():
        with pytest.raises(UserError, match=field.replace("_", "-")):
            pretrain(PretrainConfig(**{**TINY, "steps": 4, "warmup_steps": 1, field: value}), corpus_dir, tok_dir,
                     tmp_path / "o3", progress=False)
    # through the command line
    args = build_parser().parse_args(["pretrain", "--corpus", str(corpus_dir), "--tokenizer", str(tok_dir),
                              "--out", str(tmp_path / "cli"), "--hidden-size", "30", "--num-heads", "4"])
    assert args.hidden_size == 30 and args.num_heads == 4 and args.steps == 1500
    with pytest.raises(UserError, match="divisible"):
        args.func(args)


def test_cli_trains_tokenizer_and_model(corpus, tmp_path, capsys):
    corpus_dir, _ = corpus
    args = build_parser().parse_args(["pretrain", "--family", "gpt_neox", "--corpus", str(corpus_dir),
                              "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "run"),
                              "--vocab-size", "300", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
                              "--intermediate-size", "64", "--seq-len", "16", "--batch-size", "2", "--steps", "3",
                              "--warmup-steps", "1", "--save-steps", "0,3", "--no-progress"])
    args.func(args)
    assert capsys.readouterr().out.split() == [str(tmp_path / "run" / "step0"), str(tmp_path / "run" / "step3")]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "step3").config.model_type == "gpt_neox"
