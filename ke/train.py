"""Pieces shared by the two training loops (pretraining the miniature, continual learning)."""
from __future__ import annotations

import math

import torch
from torch import nn


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, floor: float = 0.1,
              warmup_start: float = 0.0) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based).

    Linear warmup from `warmup_start` to 1 over `warmup_steps`, then cosine decay from 1 to `floor`
    at `total_steps` (OLMo's CosWithWarmup: the official continual runs use warmup_start=0.1, floor=0.1).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


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
