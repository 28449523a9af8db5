"""Shared fixtures: a tiny tokenizer and tiny random models of each supported architecture, saved to disk
with save_pretrained so tests go through the same loading code as users (no network)."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import NoReturn

import ke  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import pytest
import torch

FICTIONAL_KNOWLEDGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "fictional_knowledge"


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose input is missing on this machine; fail it under CI (the environment variable CI is
    set, as .ci/run does), where every input must be present and a skip would hide a missing feature."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI is set: CI must provide it", pytrace=False)
    pytest.skip(reason)


def require_shared(path: Path, what: str) -> Path:
    """`path`, a file or folder of ../shared (data that is not part of the project), or skip/fail as
    `unavailable` says when it is missing."""
    if not path.exists():
        unavailable(f"{what} is not at {path}")
    return path


@pytest.fixture(scope="session")
def fictional_knowledge() -> Path:
    """The folder of the paper's Fictional Knowledge files (../shared/data/fictional_knowledge)."""
    return require_shared(FICTIONAL_KNOWLEDGE, "the paper's Fictional Knowledge data")


WORDS = ("the a of in was born city people company works at university studied lives near river old new "
         "north south east west red blue green large small and is on with for by from to").split()


def make_texts(n: int, seed: int = 0, min_words: int = 3, max_words: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models: thread start-up costs more than it saves on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(make_texts(300), trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<|endoftext|>", "<|padding|>", "<unk>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|padding|>", unk_token="<unk>")
    out = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(out)
    return out


def tiny_config(arch: str, vocab_size: int):
    import transformers as tf
    common = dict(vocab_size=vocab_size, num_hidden_layers=2, num_attention_heads=4)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    classes = {"olmo": tf.OlmoConfig, "olmo2": tf.Olmo2Config, "llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config,
               "mistral": tf.MistralConfig, "gpt_neox": tf.GPTNeoXConfig, "qwen2_moe": tf.Qwen2MoeConfig}
    extra = {"num_key_value_heads": 2} if arch in ("llama", "qwen2", "mistral") else {}
    if arch == "qwen2_moe":
        extra = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16}
    return classes[arch](hidden_size=32, intermediate_size=48, max_position_embeddings=128, bos_token_id=0,
                         eos_token_id=0, pad_token_id=1, **common, **extra)


def save_tiny_model(arch: str, tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tokenizer)))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tokenizer_dir):
    """Factory: tiny_models('olmo') -> folder of a saved tiny random model of that architecture."""
    cache = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            cache[arch] = save_tiny_model(arch, tokenizer_dir, tmp_path_factory.mktemp(arch))
        return cache[arch]
    return get
