"""Knowledge entropy (Eq. 2), attention entropy (Eq. 3) and next-token entropy (App. A.4) in one forward pass.

Forward pre-hooks on each FFN output projection reduce the memory coefficients inside the hook, so only
[layers, ffn_dim] running sums are kept (plus [docs, layers, ffn_dim] per-document means when asked for), never
per-token activations of all layers.

Several processes (`accelerate launch --num_processes N ...`, one GPU each; gloo on CPUs):
- one checkpoint (`measure`, `run_entropy`): process r takes the r-th contiguous 1/N of the documents; the sums
  (coefficients per slot, ReLU variant, attention per head, NTP, token and document counts) are added over the
  processes before any entropy is computed, so N processes give the 1-process result up to summation order.
- many checkpoints (`run_entropy_many`): while at least N checkpoints are left, process r measures checkpoints
  r, r+N, ... alone, without communication; otherwise they are measured in turn with the documents split.
The process that holds a checkpoint's complete result (the main one when documents are split) writes its files.
"""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__
from .data import load_documents, pad_rows
from .errors import UserError
from .models import attention_modules, find_ffn_layers, hooks
from .storage import atomic_path, config_key, fingerprint, read_cached, write_cached

RESULT_FILE, COEFFICIENTS_FILE = "entropy.json", "coefficients.safetensors"
PER_DOCUMENT_FILE = "per_document.safetensors"
VERSION = 1  # of a measurement's meaning: bump it to recompute every cached one (see ke.storage)


def entropy_of(weights: torch.Tensor) -> torch.Tensor:
    """Row-wise entropy (nats) of non-negative weights normalised to sum 1; 0 ln 0 = 0."""
    p = weights.double() / weights.double().sum(-1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(-1)


def top1_share(weights: torch.Tensor) -> torch.Tensor:
    """Row-wise share of the row's total held by its largest ceil(m / 100) entries (the top 1% of m slots)."""
    k = -(-weights.shape[-1] // 100)  # integer ceil: 0.01 * m in floats can land just above an integer
    w = weights.double()
    return w.topk(k, dim=-1).values.sum(-1) / w.sum(-1)


@dataclass
class EntropySettings:
    seq_len: int = 1024
    batch_size: int = 8
    count_padding: bool = False  # official code: pad to seq_len, no attention mask, average over all positions
    attention: bool = False
    ntp: bool = False
    relu: bool = False  # Fig. 9 variant: max(C, 0) instead of |C| (the paper's prose reading)
    skip_first: bool = False  # leave each document's first position out of its mean (all three entropies)
    per_document: bool = False  # also keep every document's mean |C| [docs, layers, ffn_dim] (for bootstraps)

    def check(self):
        for name in ("seq_len", "batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(self, name)}.")
        if self.skip_first and self.seq_len < 2:
            raise UserError(f"--skip-first needs --seq-len of at least 2; got {self.seq_len}.")


@dataclass
class EntropyResult:
    knowledge_entropy: float
    layer_entropy: list[float]
    num_docs: int
    num_tokens: int
    mean_abs_coefficients: torch.Tensor = field(repr=False)  # [layers, ffn_dim], C-bar of Eq. 2
    layer_top1_share: list[float] | None = None  # share of each layer's total C-bar in its top 1% of slots
    relu_knowledge_entropy: float | None = None
    relu_layer_entropy: list[float] | None = None
    attention_entropy: float | None = None
    layer_attention_entropy: list[float] | None = None
    head_attention_entropy: list[list[float]] | None = None
    ntp_entropy: float | None = None
    per_document: torch.Tensor | None = field(default=None, repr=False)  # [docs, layers, ffn_dim] mean |C|
    num_processes: int = 1  # processes whose documents were summed into this result

    def summary(self) -> dict:
        skip = ("mean_abs_coefficients", "per_document", "num_processes")
        out = {k: v for k, v in asdict(self).items() if k not in skip and v is not None}
        out["num_layers"], out["ffn_dim"] = self.mean_abs_coefficients.shape
        return out


class _Sums:
    """Running sums over documents, filled by the hooks. Each position carries its weight in its document's mean
    (`weights`, [B, T], rows summing to 1), so every sum is a sum of per-document means."""

    def __init__(self, settings: EntropySettings):
        self.settings = settings
        self.weights = None
        self.coeff, self.relu, self.attention = {}, {}, {}
        self.rows = {}  # layer -> [B, m] per-document means of each batch (per_document only)
        self.ntp = 0.0

    def add(self, store: dict, layer: int, value: torch.Tensor):
        store[layer] = store.get(layer, 0) + value.double()

    def ffn_hook(self, layer: int):
        def hook(module, args):
            c = args[0].float().reshape(*self.weights.shape, -1)  # [B, T, m] (OPT flattens to [B*T, m])
            w = self.weights.unsqueeze(1)  # [B, 1, T]
            means = torch.bmm(w, c.abs())[:, 0]  # [B, m]: each document's mean |C|
            self.add(self.coeff, layer, means.double().sum(0))
            if self.settings.per_document:
                self.rows.setdefault(layer, []).append(means.cpu())
            if self.settings.relu:
                self.add(self.relu, layer, torch.bmm(w, c.clamp(min=0))[:, 0].double().sum(0))
        return hook

    def attention_hook(self, layer: int):
        def hook(module, args, output):
            probs = output[1]  # [B, H, T(query), T(key)], post-softmax
            if probs is None:
                raise UserError("attention weights are unavailable; load the model with attn_implementation='eager'.")
            per_query = -torch.special.xlogy(probs.float(), probs.float()).sum(-1).nan_to_num()  # [B, H, T]
            self.add(self.attention, layer, torch.einsum("bht,bt->h", per_query, self.weights))
        return hook


def position_weights(mask: torch.Tensor, settings: EntropySettings) -> torch.Tensor:
    """[B, T] weight of each position in its document's mean: 1 / (counted positions) where counted, else 0.
    Counted: the real tokens (all seq_len positions with count_padding), minus position 0 with skip_first."""
    counted = torch.ones_like(mask) if settings.count_padding else mask.clone()
    if settings.skip_first:
        counted[:, 0] = 0
    counted = counted.double()
    return (counted / counted.sum(1, keepdim=True)).float()


def _batches(token_lists, batch_size, pad_id, pad_to):
    for start in range(0, len(token_lists), batch_size):
        yield pad_rows(token_lists[start:start + batch_size], pad_id, width=pad_to)


def tokenize_documents(tokenizer, documents: list, seq_len: int) -> list[list[int]]:
    """Token ids of each document, truncated to seq_len: a text through the model's tokenizer with its special
    tokens; a list of ids (e.g. the pretraining first batch) as it is, with no decode / re-encode round trip.
    Empty documents are dropped."""
    texts = [i for i, doc in enumerate(documents) if isinstance(doc, str)]
    encoded = tokenizer([documents[i] for i in texts], add_special_tokens=True, truncation=True,
                        max_length=seq_len)["input_ids"] if texts else []
    by_index = dict(zip(texts, encoded))
    tokens = [by_index[i] if i in by_index else [int(t) for t in doc][:seq_len] for i, doc in enumerate(documents)]
    return [ids for ids in tokens if ids]


def load_measurement_data(spec: str, max_docs: int | None = None) -> list[str | list[int]]:
    """The documents to measure. A `.jsonl` file is read row by row: a row with an `input_ids` list gives those
    token ids (what the first-batch exporter writes beside `text`), a row with only `text` gives the text.
    Anything else goes through ke.data.load_documents."""
    path = Path(spec).expanduser()
    if not (path.is_file() and path.suffix == ".jsonl"):
        return load_documents(spec, max_docs=max_docs)
    docs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        row = row if isinstance(row, dict) else {}
        ids, text = row.get("input_ids"), row.get("text")
        if isinstance(ids, list) and all(type(t) is int and t >= 0 for t in ids):
            doc = ids
        elif ids is None and isinstance(text, str):
            doc = text if text.strip() else None
        else:
            raise UserError(f"line {number} of {path} has neither an 'input_ids' list of non-negative token ids nor "
                            "a 'text' string; fix that line.")
        if doc:
            docs.append(doc)
            if max_docs and len(docs) >= max_docs:
                break
    if not docs:
        raise UserError(f"data {spec} holds no non-empty documents; pass data with at least one document.")
    return docs


# ---------------------------------------------------------------- processes (accelerate)

def _state():
    """accelerate's PartialState of this process, joined to its launch's process group (see ke.distributed)."""
    from .distributed import state
    return state()


def _processes() -> tuple[int, int]:
    """(number of processes, this process's index) of the current `accelerate launch` (1, 0 without one)."""
    state = _state()
    return state.num_processes, state.process_index


def _wait_for_everyone():
    _state().wait_for_everyone()


def _share(count: int, world: int, rank: int) -> tuple[int, int]:
    """[start, stop) of process `rank`'s contiguous share of `count` items (shares differ by at most one)."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _sum_over_processes(parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed element-wise over all processes: one float64 all-reduce of their concatenation."""
    from accelerate.utils import reduce
    flat = torch.cat([p.double().flatten() for p in parts]).to(_state().device)
    flat = reduce(flat, "sum").cpu()
    return [chunk.view(p.shape) for chunk, p in zip(flat.split([p.numel() for p in parts]), parts)]


def _gather_rows(rows: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every process's [n_r, ...] rows, concatenated in process order (process r holds counts[r] rows)."""
    from accelerate.utils import gather
    width = max(counts)
    padded = rows.new_zeros((width, *rows.shape[1:]))
    padded[:len(rows)] = rows
    every = gather(padded.to(_state().device)).cpu()  # [world * width, ...]
    return torch.cat([every[r * width: r * width + n] for r, n in enumerate(counts)])


def process_device(device: str | None) -> str:
    """`device`, except that "auto", or plain "cuda" under a launch with several processes, is this process's own
    device (cuda:<local rank>, or cpu)."""
    if device in (None, "auto", "cuda"):
        state = _state()
        if device != "cuda" or state.num_processes > 1:
            return str(state.device)
    return device


# ---------------------------------------------------------------- measuring

@torch.no_grad()
def measure(model, tokenizer, documents: list, settings: EntropySettings | None = None,
            progress: bool = True, *, split_documents: bool = True) -> EntropyResult:
    """Knowledge entropy of `model` on `documents` (texts, or token-id lists measured as given), and attention /
    NTP entropy when asked.

    Under a launch with several processes every process must call this with the same documents (unless
    split_documents=False, which measures all documents on this process alone): each measures its share and the
    sums are added over processes, so every process returns the complete result.
    """
    settings = settings or EntropySettings()
    settings.check()
    tokens = tokenize_documents(tokenizer, documents, settings.seq_len)
    if settings.skip_first:
        tokens = [ids for ids in tokens if len(ids) > 1]  # nothing is left of a one-token document
    if not tokens:
        raise UserError("the data holds no non-empty documents; pass a file with at least one line of text.")
    vocab = model.get_input_embeddings().num_embeddings
    largest = max(max(ids) for ids in tokens)
    if largest >= vocab:
        raise UserError(f"token id {largest} is outside the model's vocabulary of {vocab}; measure token-id rows "
                        "only with a model of the tokenizer that made them.")
    world, rank = _processes() if split_documents else (1, 0)
    if len(tokens) < world:
        raise UserError(f"{len(tokens)} documents cannot be split over {world} processes; launch at most "
                        f"{len(tokens)} processes or pass more documents.")
    counts = [stop - start for start, stop in (_share(len(tokens), world, r) for r in range(world))]
    start, stop = _share(len(tokens), world, rank)
    # Batched by length: documents of similar length share a batch, so less of it is padding (the book's 2,048-document
    # sample fills 45% of its 2,048 x 128 slots in its own order). Every sum is over per-document means, so the
    # order changes only the last digits; per-document rows are put back in the documents' order at the end.
    order = sorted(range(stop - start), key=lambda i: len(tokens[start + i]))
    mine = [tokens[start + i] for i in order]

    implementation = model.config._attn_implementation
    if settings.attention and implementation != "eager":
        model.set_attn_implementation("eager")  # only eager attention materialises the weights
    sums = _Sums(settings)
    pre = [(layer.down, sums.ffn_hook(layer.index)) for layer in find_ffn_layers(model)]
    forward = [(m, sums.attention_hook(i)) for i, m in enumerate(attention_modules(model))] \
        if settings.attention else []
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Without NTP entropy only the last position's logits are needed: skip the LM head where the model allows.
    skip_logits = not settings.ntp and "logits_to_keep" in inspect.signature(model.forward).parameters
    num_tokens = 0
    try:
        with hooks(forward, pre):
            bar = tqdm(total=len(mine), desc="entropy", unit="doc", leave=False, disable=not progress or rank != 0)
            for ids, mask in _batches(mine, settings.batch_size, pad_id,
                                      settings.seq_len if settings.count_padding else None):
                weights = position_weights(mask, settings)
                ids, mask, weights = ids.to(device), mask.to(device), weights.to(device)
                # the official script passes input_ids only: with count_padding, padding is attended to and counted
                kwargs = {} if settings.count_padding else {"attention_mask": mask}
                if skip_logits:
                    kwargs["logits_to_keep"] = 1
                sums.weights = weights
                logits = model(input_ids=ids, **kwargs).logits
                if settings.ntp:
                    logp = torch.log_softmax(logits.float(), -1)
                    per_token = -(logp.exp() * logp).sum(-1)
                    sums.ntp += float((per_token * weights).double().sum())
                num_tokens += int((weights > 0).sum())
                bar.update(len(ids))
            bar.close()
    finally:
        if model.config._attn_implementation != implementation:
            model.set_attn_implementation(implementation)

    # Eq. 2: mean over documents of the per-document mean. Everything below is a sum over documents, added up
    # over processes before the entropies are taken.
    parts = [torch.stack([sums.coeff[i] for i in sorted(sums.coeff)]),
             torch.tensor([sums.ntp, num_tokens, len(mine)], dtype=torch.float64)]
    if settings.relu:
        parts.append(torch.stack([sums.relu[i] for i in sorted(sums.relu)]))
    if settings.attention:
        parts.append(torch.stack([sums.attention[i] for i in sorted(sums.attention)]))  # [layers, heads]
    if world > 1:
        parts = _sum_over_processes(parts)
    coeff, (ntp, num_tokens, num_docs), *rest = parts
    num_docs, num_tokens = round(float(num_docs)), round(float(num_tokens))
    cbar = coeff / num_docs
    layer_h = entropy_of(cbar)
    result = EntropyResult(float(layer_h.sum()), layer_h.tolist(), num_docs, num_tokens, cbar.float(),
                           layer_top1_share=top1_share(cbar).tolist(), num_processes=world)
    if settings.relu:
        relu_h = entropy_of(rest.pop(0))
        result.relu_knowledge_entropy, result.relu_layer_entropy = float(relu_h.sum()), relu_h.tolist()
    if settings.attention:
        heads = rest.pop(0) / num_docs
        result.head_attention_entropy = heads.tolist()
        result.layer_attention_entropy = heads.mean(1).tolist()
        result.attention_entropy = float(heads.mean(1).sum())
    if settings.ntp:
        result.ntp_entropy = float(ntp) / num_docs
    if settings.per_document:
        rows = torch.stack([torch.cat(sums.rows[i]) for i in sorted(sums.rows)], 1)  # [docs, layers, m], by length
        rows = rows[torch.argsort(torch.tensor(order))]   # in the documents' order
        result.per_document = _gather_rows(rows, counts) if world > 1 else rows
    return result


# ---------------------------------------------------------------- cached artifacts

def entropy_key(source: str, revision: str | None, data: str, max_docs: int | None, dtype: str,
                settings: EntropySettings) -> dict:
    """What a measurement depends on; its cached entropy.json is reused only under an equal key."""
    return {"version": VERSION, "model": str(source), "revision": revision, "data": str(data), "max_docs": max_docs,
            "dtype": dtype, "settings": config_key(settings), "model_files": fingerprint(source),
            "data_files": fingerprint(data), "ke_version": __version__}


def _check(settings: EntropySettings | None, max_docs: int | None) -> EntropySettings:
    settings = settings or EntropySettings()
    settings.check()
    if max_docs is not None and max_docs <= 0:
        raise UserError(f"--max-docs must be a positive integer; got {max_docs}.")
    return settings


def _measure_and_write(source: str, revision: str | None, data: str, documents: list, out_dir: Path, key: dict,
                       settings: EntropySettings, dtype: str, device: str, progress: bool, loaded,
                       split_documents: bool) -> dict:
    """Measure one checkpoint; the process holding the complete result writes its files (entropy.json last)."""
    from safetensors.torch import save_file

    from .models import load_model

    loaded = loaded or load_model(source, revision, dtype=dtype, device=process_device(device))
    started = time.time()
    result = measure(loaded.model, loaded.tokenizer, documents, settings, progress=progress,
                     split_documents=split_documents)
    world, rank = _processes()
    kinds = {isinstance(doc, str) for doc in documents}
    record = {**result.summary(),
              "provenance": {**loaded.provenance, "ke_version": __version__, "data": data,
                             "input": "mixed" if len(kinds) > 1 else "text" if True in kinds else "token_ids",
                             "seq_len": settings.seq_len, "batch_size": settings.batch_size,
                             "count_padding": settings.count_padding, "skip_first": settings.skip_first,
                             "num_processes": result.num_processes, "process_index": rank,
                             "seconds": round(time.time() - started, 2)}}
    if result.num_processes == 1 or rank == 0:
        files = {COEFFICIENTS_FILE: result.mean_abs_coefficients}
        if result.per_document is not None:
            files[PER_DOCUMENT_FILE] = result.per_document.float()
        for name, tensor in files.items():
            with atomic_path(out_dir / name) as tmp:
                save_file({"mean_abs_coefficients": tensor.contiguous()}, str(tmp))
        # last, vouching for the files above: a present entropy.json is a finished run
        record = write_cached(record, out_dir / RESULT_FILE, key, files=[out_dir / name for name in files])
    if result.num_processes > 1:  # every process returns the main one's record, once its files exist
        from accelerate.utils import broadcast_object_list
        record = broadcast_object_list([record])[0]
    return record


def run_entropy(source: str, data: str, out_dir, *, revision: str | None = None, max_docs: int | None = None,
                settings: EntropySettings | None = None, dtype: str = "float32", device: str = "cpu",
                progress: bool = True, loaded=None, split_documents: bool = True) -> dict:
    """Measure one checkpoint on one data set and write `entropy.json` + `coefficients.safetensors` (and
    `per_document.safetensors` with settings.per_document) to out_dir.

    Cached: if out_dir already holds a result made with the same inputs, it is returned without recomputing.
    `loaded` (a ke.models.Loaded of the same source) saves reloading when one checkpoint is measured on several
    data sets. Under a launch with several processes, all call this and the documents are split (see `measure`).
    """
    settings = _check(settings, max_docs)
    out_dir = Path(out_dir)
    key = entropy_key(source, revision, data, max_docs, dtype, settings)
    cached = read_cached(out_dir / RESULT_FILE, key)
    if cached is not None:
        return cached
    from .models import check_context
    check_context(source, revision, settings.seq_len, loaded.model.config if loaded is not None else None)
    documents = _documents(data, max_docs, key["data_files"])
    return _measure_and_write(source, revision, data, documents, out_dir, key, settings, dtype, device, progress,
                              loaded, split_documents)


@lru_cache(maxsize=2)
def _documents(data: str, max_docs: int | None, files: str | None) -> list:
    """load_measurement_data, kept while the files are unchanged (`files`: their fingerprint): one checkpoint is
    measured on the same sample several times (variants), and a process measures many checkpoints."""
    return load_measurement_data(data, max_docs)


@dataclass
class _Target:
    name: str  # folder under out_root
    path: str
    revision: str | None


def _target(source: str | None, checkpoint) -> _Target:
    """A checkpoint to measure: a ke.models.Checkpoint, a checkpoint folder, a folder name inside the run folder
    `source`, or a hub revision of `source`."""
    from .models import Checkpoint
    if isinstance(checkpoint, Checkpoint):
        return _Target(checkpoint.name, checkpoint.path, checkpoint.revision)
    checkpoint = str(checkpoint)
    folder = Path(checkpoint).expanduser()
    if (folder / "config.json").exists():
        return _Target(folder.name, checkpoint, None)
    if source is not None:
        inside = Path(source).expanduser() / checkpoint
        if (inside / "config.json").exists():
            return _Target(checkpoint, str(inside), None)
        if not Path(source).expanduser().exists():
            return _Target(checkpoint, source, checkpoint)
    raise UserError(f"checkpoint {checkpoint} is neither a model folder nor a revision of a hub model; pass "
                    "checkpoint folders, or a hub id with its revisions (list them with `ke checkpoints`).")


def run_entropy_many(source: str | None, checkpoints: list, data: str, out_root, *, max_docs: int | None = None,
                     settings: EntropySettings | None = None, dtype: str = "float32", device: str = "cpu",
                     progress: bool = True, split: str = "auto") -> list[dict]:
    """Measure several checkpoints on one data set: out_root/<checkpoint name>/ gets each one's run_entropy files.

    `checkpoints`: ke.models.Checkpoint objects, checkpoint folders, folder names inside the run folder `source`,
    or hub revisions of `source`. Each is cached on its own, so a rerun after an interruption measures only the
    unfinished ones. Under a launch with N processes, `split` chooses what is divided: "checkpoints" (process r
    measures r, r+N, ...), "documents" (each checkpoint in turn, documents split), or "auto" (checkpoints while at
    least N are unfinished). Returns the records in the order of `checkpoints`, on every process.
    """
    settings = _check(settings, max_docs)
    if split not in ("auto", "checkpoints", "documents"):
        raise UserError(f"--split must be auto, checkpoints or documents; got {split!r}.")
    targets = [_target(source, c) for c in checkpoints]
    names = [t.name for t in targets]
    if len(set(names)) < len(names):
        raise UserError(f"checkpoint names repeat ({', '.join(sorted({n for n in names if names.count(n) > 1}))}); "
                        "pass each checkpoint once, from folders with distinct names.")
    out_dirs = [Path(out_root) / name for name in names]
    keys = [entropy_key(t.path, t.revision, data, max_docs, dtype, settings) for t in targets]
    pending = [i for i, (d, k) in enumerate(zip(out_dirs, keys)) if read_cached(d / RESULT_FILE, k) is None]
    world, rank = _processes()
    if world > 1:
        _wait_for_everyone()  # all processes saw the same finished checkpoints before anything is written
    by_checkpoint = world > 1 and (split == "checkpoints" or split == "auto" and len(pending) >= world)
    mine = pending[rank::world] if by_checkpoint else pending
    documents = load_measurement_data(data, max_docs) if mine else None
    label = f"checkpoints (process 0 of {world})" if by_checkpoint else "checkpoints"
    for i in tqdm(mine, desc=label, unit="checkpoint", disable=not progress or rank != 0):
        t = targets[i]
        _measure_and_write(t.path, t.revision, data, documents, out_dirs[i], keys[i], settings, dtype, device,
                           progress, None, split_documents=not by_checkpoint)
    if world > 1:
        _wait_for_everyone()
    records = [read_cached(d / RESULT_FILE, k) for d, k in zip(out_dirs, keys)]
    missing = [names[i] for i, r in enumerate(records) if r is None]
    if missing:
        raise RuntimeError(f"no result was written for {', '.join(missing)}; is {out_root} on a file system "
                           "shared by all processes?")
    return records


def load_coefficients(out_dir) -> torch.Tensor:
    """C-bar [layers, ffn_dim] saved by run_entropy."""
    from safetensors.torch import load_file
    return load_file(str(Path(out_dir) / COEFFICIENTS_FILE))["mean_abs_coefficients"]


def load_per_document(out_dir) -> torch.Tensor:
    """Per-document mean |C| [docs, layers, ffn_dim] saved by run_entropy with settings.per_document."""
    from safetensors.torch import load_file
    path = Path(out_dir) / PER_DOCUMENT_FILE
    if not path.exists():
        raise UserError(f"{out_dir} holds no {PER_DOCUMENT_FILE}; measure it with --per-document.")
    return load_file(str(path))["mean_abs_coefficients"]


def bootstrap_entropy(per_document: torch.Tensor, draws: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Bootstrap intervals over documents of the knowledge entropy and of each layer's entropy, from the
    per-document mean |coefficients| [docs, layers, ffn_dim] (EntropySettings.per_document): each draw resamples
    the documents (multinomial counts, one matrix product for all draws), averages their C-bar (Eq. 2) and takes
    the entropies. Normal intervals around the full-sample value, from the draws' standard deviation: the entropy
    of a resampled mean is biased low (entropy is concave), so percentile intervals would sit below it."""
    from .stats import interval, resampled_means

    c = per_document.double()
    layer_h = entropy_of(resampled_means(c, draws, seed))        # [draws, layers]
    full = entropy_of(c.mean(0))                                  # [layers]
    lows, highs = interval(layer_h, full, level, "normal")
    return {"draws": draws, "level": level, "seed": seed, "documents": c.shape[0],
            "knowledge_entropy": list(interval(layer_h.sum(1), full.sum(), level, "normal")),
            "layer_entropy": [[low, high] for low, high in zip(lows, highs)]}


def entropy_change(start: torch.Tensor, end: torch.Tensor, measured: float, draws: int = 1000, level: float = 0.95,
                   seed: int = 0) -> dict:
    """Change of knowledge entropy between two checkpoints measured on the same documents, with a paired bootstrap
    interval: from the per-document mean |coefficients| [docs, layers, ffn_dim] of each (EntropySettings.per_document),
    every draw resamples the documents once for both checkpoints and takes end minus start. The interval is normal,
    around `measured` (the measurements' own difference), from the draws' standard deviation (see bootstrap_entropy).
    Pairing removes the documents' shared sampling noise, so the interval is narrower than two separate ones."""
    from .stats import interval, resampled_means

    if start.shape != end.shape:
        raise UserError(f"the two checkpoints were measured on different samples ({tuple(start.shape)} against "
                        f"{tuple(end.shape)}); measure both on the same documents.")
    both = torch.stack([start.double(), end.double()], 1)              # [docs, 2, layers, ffn_dim]
    h = entropy_of(resampled_means(both, draws, seed)).sum(-1)          # [draws, 2]
    low, high = interval(h[:, 1] - h[:, 0], measured, level, "normal")
    return {"change": measured, "interval": [float(low), float(high)], "draws": draws, "level": level,
            "documents": start.shape[0]}
