"""Knowledge entropy (Eq. 2), attention entropy (Eq. 3) and next-token entropy (App. A.4) in one forward pass.

Forward pre-hooks on each FFN output projection reduce the memory coefficients inside the hook, so only
[layers, ffn_dim] running sums are kept, never per-token activations of all layers.
"""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__
from .errors import UserError
from .models import attention_modules, find_ffn_layers
from .storage import write_json_atomically


def entropy_of(weights: torch.Tensor) -> torch.Tensor:
    """Row-wise entropy (nats) of non-negative weights normalised to sum 1; 0 ln 0 = 0."""
    p = weights.double() / weights.double().sum(-1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(-1)


@dataclass
class EntropySettings:
    seq_len: int = 1024
    batch_size: int = 8
    count_padding: bool = False  # official code: pad to seq_len, no attention mask, average over all positions
    attention: bool = False
    ntp: bool = False
    relu: bool = False  # Fig. 9 variant: max(C, 0) instead of |C| (the paper's prose reading)

    def check(self):
        for name in ("seq_len", "batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(self, name)}.")


@dataclass
class EntropyResult:
    knowledge_entropy: float
    layer_entropy: list[float]
    num_docs: int
    num_tokens: int
    mean_abs_coefficients: torch.Tensor = field(repr=False)  # [layers, ffn_dim], C-bar of Eq. 2
    relu_knowledge_entropy: float | None = None
    relu_layer_entropy: list[float] | None = None
    attention_entropy: float | None = None
    layer_attention_entropy: list[float] | None = None
    head_attention_entropy: list[list[float]] | None = None
    ntp_entropy: float | None = None

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "mean_abs_coefficients" and v is not None}
        out["num_layers"], out["ffn_dim"] = self.mean_abs_coefficients.shape
        return out


class _Sums:
    """Running sums over documents, filled by the hooks."""

    def __init__(self, settings: EntropySettings):
        self.settings = settings
        self.weights = None  # [B, T]: per-position weight (1/T_n on real tokens, or 1 when counting padding)
        self.coeff, self.relu, self.attention = {}, {}, {}
        self.ntp = 0.0

    def add(self, store: dict, layer: int, value: torch.Tensor):
        store[layer] = store.get(layer, 0) + value.double()

    def ffn_hook(self, layer: int):
        def hook(module, args):
            c = args[0].float().flatten(0, 1)  # [B*T, m]
            w = self.weights.reshape(1, -1)
            self.add(self.coeff, layer, (w @ c.abs())[0])
            if self.settings.relu:
                self.add(self.relu, layer, (w @ c.clamp(min=0))[0])
        return hook

    def attention_hook(self, layer: int):
        def hook(module, args, output):
            probs = output[1]  # [B, H, T(query), T(key)], post-softmax
            if probs is None:
                raise UserError("attention weights are unavailable; load the model with attn_implementation='eager'.")
            per_query = -torch.special.xlogy(probs.float(), probs.float()).sum(-1).nan_to_num()  # [B, H, T]
            self.add(self.attention, layer, torch.einsum("bht,bt->h", per_query, self.weights))
        return hook


def _batches(token_lists, batch_size, pad_id, pad_to):
    for start in range(0, len(token_lists), batch_size):
        chunk = token_lists[start:start + batch_size]
        width = pad_to or max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, tokens in enumerate(chunk):
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
        yield ids, mask


def tokenize_documents(tokenizer, documents: list[str], seq_len: int) -> list[list[int]]:
    """Model tokenizer with its special tokens, truncated to seq_len; empty documents are dropped."""
    encoded = tokenizer(list(documents), add_special_tokens=True, truncation=True, max_length=seq_len)["input_ids"]
    return [ids for ids in encoded if ids]


@torch.no_grad()
def measure(model, tokenizer, documents: list[str], settings: EntropySettings | None = None,
            progress: bool = True) -> EntropyResult:
    """Knowledge entropy of `model` on `documents` (and attention / NTP entropy when asked)."""
    settings = settings or EntropySettings()
    settings.check()
    tokens = tokenize_documents(tokenizer, documents, settings.seq_len)
    if not tokens:
        raise UserError("the data holds no non-empty documents; pass a file with at least one line of text.")
    implementation = model.config._attn_implementation
    if settings.attention and implementation != "eager":
        model.set_attn_implementation("eager")  # only eager attention materialises the weights
    sums = _Sums(settings)
    handles = [layer.down.register_forward_pre_hook(sums.ffn_hook(layer.index)) for layer in find_ffn_layers(model)]
    if settings.attention:
        handles += [m.register_forward_hook(sums.attention_hook(i)) for i, m in enumerate(attention_modules(model))]
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Without NTP entropy only the last position's logits are needed: skip the LM head where the model allows.
    skip_logits = not settings.ntp and "logits_to_keep" in inspect.signature(model.forward).parameters
    num_tokens = 0
    try:
        bar = tqdm(total=len(tokens), desc="entropy", unit="doc", disable=not progress)
        for ids, mask in _batches(tokens, settings.batch_size, pad_id,
                                  settings.seq_len if settings.count_padding else None):
            ids, mask = ids.to(device), mask.to(device)
            if settings.count_padding:
                weights = torch.ones_like(mask, dtype=torch.float32)
                kwargs = {}  # the official script passes input_ids only: padding is attended to and counted
            else:
                weights = mask.float() / mask.sum(1, keepdim=True)
                kwargs = {"attention_mask": mask}
            if skip_logits:
                kwargs["logits_to_keep"] = 1
            sums.weights = weights
            logits = model(input_ids=ids, **kwargs).logits
            if settings.ntp:
                logp = torch.log_softmax(logits.float(), -1)
                per_token = -(logp.exp() * logp).sum(-1)
                sums.ntp += float((per_token * weights).sum())
            num_tokens += int(weights.numel() if settings.count_padding else mask.sum())
            bar.update(len(ids))
        bar.close()
    finally:
        for handle in handles:
            handle.remove()
        if model.config._attn_implementation != implementation:
            model.set_attn_implementation(implementation)

    num_docs = len(tokens)
    # Eq. 2: mean over documents of the per-document mean; counting padding: mean over all positions.
    divisor = num_docs * settings.seq_len if settings.count_padding else num_docs
    cbar = torch.stack([sums.coeff[i] for i in sorted(sums.coeff)]) / divisor
    layer_h = entropy_of(cbar)
    result = EntropyResult(float(layer_h.sum()), layer_h.tolist(), num_docs, num_tokens, cbar.float())
    if settings.relu:
        relu_h = entropy_of(torch.stack([sums.relu[i] for i in sorted(sums.relu)]))
        result.relu_knowledge_entropy, result.relu_layer_entropy = float(relu_h.sum()), relu_h.tolist()
    if settings.attention:
        heads = torch.stack([sums.attention[i] for i in sorted(sums.attention)]) / divisor  # [layers, heads]
        result.head_attention_entropy = heads.tolist()
        result.layer_attention_entropy = heads.mean(1).tolist()
        result.attention_entropy = float(heads.mean(1).sum())
    if settings.ntp:
        result.ntp_entropy = sums.ntp / divisor
    return result


def run_entropy(source: str, data: str, out_dir, *, revision: str | None = None, max_docs: int | None = None,
                settings: EntropySettings | None = None, dtype: str = "float32", device: str = "cpu",
                progress: bool = True, loaded=None) -> dict:
    """Measure one checkpoint on one data set and write `entropy.json` + `coefficients.safetensors` to out_dir.

    Cached: if out_dir already holds a result made with the same inputs, it is returned without recomputing.
    `loaded` (a ke.models.Loaded of the same source) saves reloading when one checkpoint is measured on several
    data sets.
    """
    from safetensors.torch import save_file

    from .data import load_documents
    from .models import load_model

    settings = settings or EntropySettings()
    settings.check()
    if max_docs is not None and max_docs <= 0:
        raise UserError(f"--max-docs must be a positive integer; got {max_docs}.")
    out_dir = Path(out_dir)
    key = {"model": source, "revision": revision, "data": data, "max_docs": max_docs, "dtype": dtype,
           **asdict(settings), "model_files": _fingerprint(source), "data_files": _fingerprint(data)}
    result_file = out_dir / "entropy.json"
    if result_file.exists():
        cached = json.loads(result_file.read_text())
        if cached.get("key") == key:
            return cached
    documents = load_documents(data, max_docs=max_docs)
    loaded = loaded or load_model(source, revision, dtype=dtype, device=device)
    started = time.time()
    result = measure(loaded.model, loaded.tokenizer, documents, settings, progress=progress)
    record = {**result.summary(), "key": key,
              "provenance": {**loaded.provenance, "ke_version": __version__, "data": data,
                             "seq_len": settings.seq_len, "batch_size": settings.batch_size,
                             "count_padding": settings.count_padding, "seconds": round(time.time() - started, 2)}}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"mean_abs_coefficients": result.mean_abs_coefficients.contiguous()},
              str(out_dir / "coefficients.safetensors"))
    write_json_atomically(record, result_file)  # written last: a present entropy.json means a finished run
    return record


def _fingerprint(spec: str) -> str | None:
    """Name, size and modification time of every file of a local path (None for hub ids), hashed."""
    import hashlib
    path = Path(spec).expanduser()
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns)
             for p in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def load_coefficients(out_dir) -> torch.Tensor:
    """C-bar [layers, ffn_dim] saved by run_entropy."""
    from safetensors.torch import load_file
    return load_file(str(Path(out_dir) / "coefficients.safetensors"))["mean_abs_coefficients"]
