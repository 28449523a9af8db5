"""Pretraining the miniature from scratch: a byte-level BPE tokenizer and OLMo / GPT-NeoX models.

One small loop on `accelerate`. The data order is fixed (packed rows read in order, wrapping around), so
the corpus's first documents form the first batch, as in OLMo, and the batch of a step is a pure function
of the step. Checkpoints `out_dir/step{N}/` hold the model and the tokenizer (`save_pretrained`) and
`ke_checkpoint.json`; `out_dir/resume_state.pt` holds the optimizer and RNG state of the latest
checkpoint, so an interrupted run continues where it saved last and ends with the same weights.
"""
from __future__ import annotations

import json
import math
import sys
from collections import deque
from contextlib import contextmanager
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import load_corpus
from ..errors import UserError
from ..models import CHECKPOINT_MARKER as MARKER  # in each checkpoint folder, vouching for its files; written last
from ..storage import (config_key, files_in, read_cached, save_folder_atomically, torch_save_atomically,
                       write_cached)
from ..train import MIXED_PRECISION, SHAPES, Schedule, build_optimizer, non_embedding_parameters, pack_texts, regime

FAMILIES = ("olmo", "gpt_neox")
ACTIVATIONS = ("silu", "gelu", "relu")  # olmo: the gate's (silu = SwiGLU); gpt_neox: the FFN's
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
LOSS_WINDOW = 20  # steps averaged into a checkpoint's `loss`
RESUME_FILE = "resume_state.pt"
LOG_FILE = "train_log.jsonl"
VERSION = 1  # of a run's meaning: bump it to retrain every cached run (see ke.storage)


# ----------------------------------------------------------------------------- tokenizer

def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir):
    """Train a byte-level BPE tokenizer (GPT-2 pre-tokenization) and `save_pretrained` it to `out_dir`.

    `<|endoftext|>` is bos and eos, `<|padding|>` is pad. `tokenizer(text)` adds no special token even with
    add_special_tokens=True (as the GPT-NeoX/Pythia tokenizer); documents are separated by EOS when packed.
    Deterministic for the same texts. If `out_dir` already holds a tokenizer, it is loaded, not retrained.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(out_dir)
    if vocab_size < 259:
        raise UserError(f"--vocab-size must be at least 259 (256 bytes, 2 special tokens, 1 merge); got {vocab_size}.")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN, PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                        pad_token=PAD_TOKEN)
    save_folder_atomically(out_dir, tokenizer.save_pretrained)
    return AutoTokenizer.from_pretrained(out_dir)


# ----------------------------------------------------------------------------- configuration

@dataclass
class PretrainConfig:
    """Model size and training schedule of one pretraining run (step = one optimizer update)."""
    family: str = "olmo"               # "olmo" (SwiGLU FFN) or "gpt_neox" (GELU FFN, the Pythia role)
    activation: str | None = None      # FFN non-linearity; None: the family's (silu gated for olmo, gelu for gpt_neox)
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512       # FFN width m: the number of memory slots per layer
    seq_len: int = 128
    batch_size: int = 32               # rows of seq_len tokens per step
    steps: int = 1500
    lr: float = 3e-3                   # peak learning rate
    warmup_steps: int = 100
    lr_floor: float = 0.1              # final lr = lr_floor x peak (cosine)
    lr_shape: str = "cosine"           # or "linear" (OLMo-7B's decay), "constant" (no decay after warmup)
    weight_decay: float = 0.1
    tie_embeddings: bool = False       # output matrix = input embeddings (OLMo-1B's weight_tying); never decayed
    grad_clip: float = 1.0
    seed: int = 0
    save_steps: list[int] | None = None  # None -> default_save_steps(steps); the final step is always saved
    mixed_precision: str = "no"        # accelerate's: "no" | "bf16" | "fp16"
    # The regime, as targets (each, when set, replaces the field it derives; see resolved()):
    tokens_per_parameter: float | None = None  # steps = this x non-embedding parameters / tokens per step
    weight_decay_efolds: float | None = None   # weight_decay = S / (sum of the schedule's learning rates)
    warmup_fraction: float | None = None       # warmup_steps = this x steps

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.lr, self.steps, self.warmup_steps, self.lr_floor, shape=self.lr_shape)

    def resolved(self) -> "PretrainConfig":
        """The configuration with steps, warmup and weight decay computed from the regime targets, in that order
        (the schedule depends on the steps and the warmup; S on the schedule). Counting the non-embedding
        parameters builds the model on the meta device (no memory, no random numbers)."""
        validate(self)
        cfg = self
        if cfg.tokens_per_parameter is not None:
            steps = max(1, round(cfg.tokens_per_parameter * non_embedding_count(cfg) / (cfg.batch_size * cfg.seq_len)))
            cfg = replace(cfg, steps=steps, tokens_per_parameter=None)
        if cfg.warmup_fraction is not None:
            cfg = replace(cfg, warmup_steps=round(cfg.warmup_fraction * cfg.steps), warmup_fraction=None)
        if cfg.weight_decay_efolds is not None:
            total = cfg.schedule.summed_lr()
            cfg = replace(cfg, weight_decay=cfg.weight_decay_efolds / total if total else 0.0, weight_decay_efolds=None)
        return cfg

    def resolved_save_steps(self) -> list[int]:
        if self.save_steps is None:
            return default_save_steps(self.steps)
        return sorted(set(self.save_steps) | {self.steps})  # the final checkpoint marks a finished run


def validate(cfg: PretrainConfig) -> None:
    """Raise UserError naming the first bad field of `cfg`."""
    if cfg.family not in FAMILIES:
        raise UserError(f"--family must be one of {', '.join(FAMILIES)}; got {cfg.family!r}.")
    if cfg.activation not in (None, *ACTIVATIONS):
        raise UserError(f"--activation must be one of {', '.join(ACTIVATIONS)} (or unset); got {cfg.activation!r}.")
    if cfg.lr_shape not in SHAPES:
        raise UserError(f"--lr-shape must be one of {', '.join(SHAPES)}; got {cfg.lr_shape!r}.")
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "seq_len", "batch_size", "steps"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(cfg, name)}.")
    if cfg.hidden_size % cfg.num_heads:
        raise UserError(f"--hidden-size ({cfg.hidden_size}) must be divisible by --num-heads ({cfg.num_heads}).")
    if not cfg.lr > 0:
        raise UserError(f"--lr must be positive; got {cfg.lr}.")
    if not 0 <= cfg.lr_floor <= 1:
        raise UserError(f"--lr-floor must be a fraction in [0, 1]; got {cfg.lr_floor}.")
    if not 0 <= cfg.warmup_steps < cfg.steps:
        raise UserError(f"--warmup-steps must be in [0, --steps); got {cfg.warmup_steps} with {cfg.steps} steps.")
    if cfg.weight_decay < 0 or cfg.grad_clip <= 0:
        raise UserError(f"--weight-decay must be >= 0 and --grad-clip > 0; got {cfg.weight_decay} and {cfg.grad_clip}.")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise UserError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}; got {cfg.mixed_precision!r}.")
    for name in ("tokens_per_parameter", "weight_decay_efolds", "warmup_fraction"):
        value = getattr(cfg, name)
        if value is not None and not (value >= 0 and (name != "warmup_fraction" or value < 1)):
            raise UserError(f"--{name.replace('_', '-')} must be a non-negative number"
                            f"{' below 1' if name == 'warmup_fraction' else ''}; got {value}.")
    if cfg.save_steps is not None and any(not 0 <= s <= cfg.steps for s in cfg.save_steps):
        raise UserError(f"--save-steps must lie in [0, {cfg.steps}]; got {cfg.save_steps}.")


def non_embedding_count(cfg: PretrainConfig) -> int:
    """Non-embedding parameters of the model `cfg` describes (built on the meta device: nothing is allocated)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # build_model seeds the generator: keep ours
        return non_embedding_parameters(build_model(cfg, _Vocabulary(2)))


class _Vocabulary:
    """The least a tokenizer must tell build_model (the embeddings do not count as non-embedding parameters)."""
    bos_token_id = eos_token_id = 0
    pad_token_id = 1

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def default_save_steps(steps: int) -> list[int]:
    """Step 0, early log-spaced steps (1%, 2%, 5%), then every 10% up to the final step (14 for 1500 steps).

    With 1500 steps: 0, 15, 30, 75, 150, 300 (initial, 20%), 450, 600, 750 (mid, 50%), ..., 1500 (final).
    """
    fractions = [0.01, 0.02, 0.05] + [k / 10 for k in range(1, 11)]
    return sorted({0, steps} | {max(1, round(f * steps)) for f in fractions})


# ----------------------------------------------------------------------------- model

def build_model(cfg: PretrainConfig, tokenizer):
    """A freshly initialised (seeded) OlmoForCausalLM or GPTNeoXForCausalLM (embeddings tied if the config says so)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, OlmoConfig, OlmoForCausalLM

    validate(cfg)
    common = dict(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                  num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                  max_position_embeddings=cfg.seq_len,  # the context it is trained on (rope does not cap it)
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=cfg.tie_embeddings, initializer_range=0.02)
    if cfg.family == "olmo":
        config = OlmoConfig(num_key_value_heads=cfg.num_heads, hidden_act=cfg.activation or "silu", **common)
        model_class = OlmoForCausalLM
    else:  # Pythia's choices: GELU, parallel residual, rotary on 25% of each head
        config = GPTNeoXConfig(hidden_act=cfg.activation or "gelu", use_parallel_residual=True, **common)
        model_class = GPTNeoXForCausalLM
    torch.manual_seed(cfg.seed)
    return model_class(config)


# ----------------------------------------------------------------------------- training

@contextmanager
def _no_transformers_bars():
    """Silence transformers' per-save 'Writing model shards' bar, which would break up the training bar."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _load_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    if not (Path(tokenizer_dir) / "tokenizer_config.json").exists():
        raise UserError(f"--tokenizer {tokenizer_dir} holds no saved tokenizer; train one with train_tokenizer first.")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise UserError(f"--tokenizer {tokenizer_dir} needs an eos and a pad token; use one made by train_tokenizer.")
    return tokenizer


def _packed_rows(corpus_dir, tokenizer, seq_len: int, out_dir: Path):
    """The corpus packed into rows of seq_len tokens, cached at out_dir/packed_seq{seq_len} (packed once)."""
    import datasets

    packed_dir = out_dir / f"packed_seq{seq_len}"
    if not packed_dir.exists():
        corpus = load_corpus(corpus_dir)
        was_caching = datasets.is_caching_enabled()
        datasets.disable_caching()  # keep map's cache files out of the corpus folder
        try:
            packed = pack_texts(corpus, tokenizer, seq_len)
        finally:
            if was_caching:
                datasets.enable_caching()
        save_folder_atomically(packed_dir, lambda tmp: packed.save_to_disk(str(tmp)))
    rows = datasets.load_from_disk(str(packed_dir)).with_format("torch")
    if len(rows) == 0:
        raise UserError(f"--corpus {corpus_dir} has fewer than seq_len={seq_len} tokens; give it more text.")
    return rows


def batch_rows(step: int, batch_size: int, n_rows: int) -> list[int]:
    """Packed-row indices of the batch of optimizer step `step` (1-based): rows in order, wrapping around."""
    start = (step - 1) * batch_size
    return [(start + i) % n_rows for i in range(batch_size)]


def run_key(cfg: PretrainConfig) -> dict:
    """What a run's checkpoints depend on (besides the corpus and tokenizer, fixed by the run folder)."""
    return {"version": VERSION, "config": config_key(cfg, leave_out=("save_steps",)),
            "save_steps": cfg.resolved_save_steps()}


def _resume_state(out_dir: Path, key: dict, checkpoints: dict[int, bool]) -> dict | None:
    """The optimizer and RNG state of the latest checkpoint of an interrupted run of this key, if every checkpoint
    up to it is intact (`checkpoints`: step -> intact); None means training from step 0."""
    path = out_dir / RESUME_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception:  # cut off or damaged
        print(f"{path} was damaged or missing; recomputing", file=sys.stderr, flush=True)
        return None
    if state["config"] != key:
        raise UserError(f"{out_dir} holds an interrupted run of another configuration; delete that folder to train "
                        "this one there, or choose another output folder (a preset's run_dir).")
    bad = [step for step, intact in checkpoints.items() if step <= state["step"] and not intact]
    if bad:
        print(f"{out_dir / f'step{bad[0]}'} was damaged or missing; recomputing (training again from step 0)",
              file=sys.stderr, flush=True)
        return None
    return state


def pretrain(cfg: PretrainConfig, corpus_dir, tokenizer_dir, out_dir, progress: bool = True, *,
             stop_after: int | None = None) -> list[Path]:
    """Train a model from scratch and return the checkpoint folders `out_dir/step{N}` saved so far, in step order.

    Resumes from the latest checkpoint if `out_dir` holds an interrupted run of the same configuration;
    returns at once if the run is finished. `stop_after` ends the loop after that step (simulates an
    interruption in tests). Deterministic for a seed on the CPU.
    """
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    validate(cfg)
    out_dir = Path(out_dir)
    key = run_key(cfg)
    save_steps = cfg.resolved_save_steps()
    checkpoints = [out_dir / f"step{s}" for s in save_steps]
    intact = [read_cached(path / MARKER, key) is not None for path in checkpoints]
    if all(intact):
        return checkpoints
    if any((path / MARKER).exists() for path, ok in zip(checkpoints, intact) if not ok):  # left after a miss
        raise UserError(f"{out_dir} holds a run of another configuration; delete that folder to train this "
                        "one there, or choose another output folder (a preset's run_dir).")

    tokenizer = _load_tokenizer(tokenizer_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _packed_rows(corpus_dir, tokenizer, cfg.seq_len, out_dir)
    n_rows = len(rows)

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    resume_path = out_dir / RESUME_FILE
    state = _resume_state(out_dir, key, dict(zip(save_steps, intact)))
    if state is None:
        start = 0
        model = build_model(cfg, tokenizer)
    else:
        start = state["step"]
        with _no_transformers_bars():
            model = AutoModelForCausalLM.from_pretrained(out_dir / f"step{start}", dtype=torch.float32)
    model.train()
    optimizer = build_optimizer(model, cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    losses = deque(maxlen=LOSS_WINDOW)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        losses.extend(state["losses"])

    # The log keeps exactly the steps up to the resumed checkpoint; later lines were from the interrupted run.
    log_path = out_dir / LOG_FILE
    old_lines = log_path.read_text().splitlines() if log_path.exists() and start > 0 else []
    log_path.write_text("".join(line + "\n" for line in old_lines if json.loads(line)["step"] <= start))

    non_embedding = non_embedding_parameters(accelerator.unwrap_model(model))

    def save_checkpoint(step: int) -> None:
        unwrapped = accelerator.unwrap_model(model)
        info = {"step": step, "lr": cfg.schedule.lr(step), "loss": sum(losses) / len(losses) if losses else None,
                "regime": regime(cfg.schedule, weight_decay=cfg.weight_decay, tokens_per_step=cfg.batch_size * cfg.seq_len,
                                 non_embedding_params=non_embedding, step=step, corpus_tokens=n_rows * cfg.seq_len)}

        def write(tmp: Path) -> None:
            unwrapped.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_cached(info, tmp / MARKER, key, files=files_in(tmp, MARKER))

        with _no_transformers_bars():
            save_folder_atomically(out_dir / f"step{step}", write)
        torch_save_atomically({"step": step, "config": key, "optimizer": optimizer.state_dict(),
                                "torch_rng": torch.get_rng_state(),
                                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                                "losses": list(losses)}, resume_path)

    if start == 0 and 0 in save_steps:
        save_checkpoint(0)
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(range(start + 1, last + 1), initial=start, total=cfg.steps, disable=not progress, desc="pretrain")
    with log_path.open("a") as log:
        for step in bar:
            lr = cfg.schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            input_ids = rows[batch_rows(step, cfg.batch_size, n_rows)]["input_ids"].to(accelerator.device)
            loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise UserError(f"the pretraining loss became {loss_value} at step {step} ({out_dir}); lower the learning "
                                f"rate (lr = {cfg.lr:g}) or raise warmup_steps ({cfg.warmup_steps}).")
            losses.append(loss_value)
            log.write(json.dumps({"step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm)}) + "\n")
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            if step in save_steps:
                log.flush()
                save_checkpoint(step)
    return [path for path in checkpoints if path.exists()]
