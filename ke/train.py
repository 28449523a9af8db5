"""Pieces shared by the two training loops (pretraining the miniature, continual learning): the learning-rate
schedule, the optimizer, packing text into rows, and the regime numbers of a run."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .errors import UserError

SHAPES = ("cosine", "linear", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")  # accelerate's


@dataclass(frozen=True)
class Schedule:
    """Learning rate of optimizer update `step` (1-based, as OLMo counts; step 0 is the start, before any update).

    Linear warmup from warmup_start x peak to peak over `warmup_steps`, then a decay to floor x peak at
    `total_steps`: "cosine" (OLMo-1B, Pythia, OLMo's CosWithWarmup), "linear" (OLMo-7B) or none ("constant").
    The official continual runs use warmup_start = 0.1 and floor = 0.1.
    """
    peak: float
    total_steps: int
    warmup_steps: int = 0
    floor: float = 0.1
    warmup_start: float = 0.0
    shape: str = "cosine"

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise UserError(f"the learning-rate schedule must be one of {', '.join(SHAPES)}; got {self.shape!r}.")

    def factor(self, step: int) -> float:
        """Multiplier of the peak learning rate at `step`."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
        if self.shape == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.shape == "linear":
            return 1.0 - (1.0 - self.floor) * progress
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def lr(self, step: int) -> float:
        return self.peak * self.factor(step)

    def summed_lr(self, last: int | None = None) -> float:
        """Sum of the learning rates of updates 1..last (default: the whole schedule)."""
        last = self.total_steps if last is None else last
        return math.fsum(self.lr(s) for s in range(1, last + 1))


def regime(schedule: Schedule, *, weight_decay: float, tokens_per_step: int, non_embedding_params: int,
           step: int | None = None, corpus_tokens: int | None = None) -> dict:
    """Where a pretraining run (or its checkpoint at `step`) stands, in two dimensionless numbers:
    - tokens per non-embedding parameter;
    - weight-decay e-folds S = sum over updates of lr_t x weight_decay: AdamW's decoupled decay multiplies every
      decayed weight by (1 - lr_t wd) per update, so after S e-folds the initialisation is damped by ~exp(-S)
      (Wang & Aitchison, ICML 2025, read AdamW's weights as a moving average over ~1/(lr wd) updates);
    plus the tokens seen and, with `corpus_tokens`, the epochs over the corpus."""
    step = schedule.total_steps if step is None else step
    tokens = step * tokens_per_step
    out = {"step": step, "tokens": tokens, "tokens_per_parameter": tokens / non_embedding_params,
           "weight_decay_efolds": weight_decay * schedule.summed_lr(step), "non_embedding_parameters":
           non_embedding_params}
    if corpus_tokens:
        out["epochs"] = tokens / corpus_tokens
    return out


def non_embedding_parameters(model: nn.Module) -> int:
    """Parameters outside the token embeddings and the output (unembedding) matrix."""
    skip = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        skip |= {id(p) for p in output.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases, norm weights and embeddings are not decayed (OLMo's default)."""
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and id(p) not in embedding_params else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def pack_texts(dataset, tokenizer, seq_len: int):
    """Tokenize a `datasets.Dataset` with a `text` column, join documents with EOS and cut the stream
    into rows of exactly `seq_len` tokens (the remainder is dropped). Returns a Dataset with `input_ids`."""
    eos = tokenizer.eos_token_id

    def tokenize_and_chunk(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        stream = [t for doc in ids for t in doc + [eos]]
        n = len(stream) // seq_len
        return {"input_ids": [stream[i * seq_len:(i + 1) * seq_len] for i in range(n)]}

    return dataset.map(tokenize_and_chunk, batched=True, batch_size=1000,
                       remove_columns=dataset.column_names, desc="packing")

