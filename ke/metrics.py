"""Knowledge probes and the probe score K, acquisition A and forgetting F (Eqs. 4-5, Section 4.1, App. B.2),
and the entity perplexity of Fig. 10. Downstream tasks (P) are scored by lm-eval in ke.downstream."""
from __future__ import annotations

from collections import defaultdict

import torch

from ke.data import pad_rows
from ke.errors import UserError
from ke.knowledge import KINDS, SETS, Probe

NORMALISATIONS = ("per_token", "official")


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _token_log_probs(model, rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, int]:
    """log p(token j | tokens < j) for j >= 1 of each right-padded row: tensor [B, L-1] and L (padded length)."""
    ids, mask = (t.to(_device(model)) for t in pad_rows(rows, pad_id))
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    return logp.cpu(), ids.shape[1]


def _eval_mode(model):
    was_training = model.training
    model.eval()
    return was_training


def probe_log_probs(model, tokenizer, probes: list[Probe], batch_size: int = 16,
                    normalisation: str = "per_token") -> list[float]:
    """ℓ(p; θ) of each probe, in the order given.

    Each probe is scored as the official code does: the text `input + " " + target` is tokenized without
    special tokens and the target tokens are those after the first len(tokenize(input)) tokens.
    - "per_token" (our default): mean log-probability of the target tokens, the paper's "average log
      probability of the target span"; independent of batching.
    - "official": -(summed target-token NLL) / (L_pad - 1), L_pad = the longest probe of the batch (the
      official `eval_batch` of olmo/train.py). It depends on which probes share a batch; we batch consecutive
      probes of the same (set, kind), `batch_size` at a time (the official code batched 16 per GPU after a
      DistributedSampler over 4 GPUs, so its batch composition differs).
    """
    if normalisation not in NORMALISATIONS:
        raise UserError(f"Probe normalisation must be one of {NORMALISATIONS}; got {normalisation!r}.")
    if not probes:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    inputs = tokenizer([p.input for p in probes], add_special_tokens=False)["input_ids"]
    texts = tokenizer([f"{p.input} {p.target}" for p in probes], add_special_tokens=False)["input_ids"]
    starts = [max(1, len(x)) for x in inputs]  # the first token has no prediction
    for p, start, full in zip(probes, starts, texts):
        if len(full) <= start:
            raise UserError(f"Probe target {p.target!r} (set {p.set}, item {p.item}) adds no tokens after its "
                            f"input; fix the probe or the tokenizer.")
    # batches: consecutive probes, never across a (set, kind) boundary
    batches, current = [], []
    for i, p in enumerate(probes):
        group_changed = current and (probes[current[0]].set, probes[current[0]].kind) != (p.set, p.kind)
        if current and (len(current) == batch_size or group_changed):
            batches.append(current)
            current = []
        current.append(i)
    batches.append(current)

    was_training = _eval_mode(model)
    values = [0.0] * len(probes)
    for batch in batches:
        logp, length = _token_log_probs(model, [texts[i] for i in batch], pad_id)
        for row, i in enumerate(batch):
            target = logp[row, starts[i] - 1: len(texts[i]) - 1]  # predictions of tokens starts[i] .. end
            if normalisation == "per_token":
                values[i] = target.mean().item()
            else:
                values[i] = target.sum().item() / (length - 1)
    model.train(was_training)
    return values


def knowledge_score(values_by_probe: list[float], probes: list[Probe]) -> dict:
    """K of Eq. 4: per set, the mean over items of the mean of that item's probe values; combined
    K = (|W_once| K_once + |W_para| K_para) / (|W_once| + |W_para|). The same per kind in `by_kind`.
    Returns {"K", "K_para", "K_once", "n_para", "n_once", "by_kind": {kind: {"K", "K_para", "K_once"}}};
    a set without probes gives None."""
    if len(values_by_probe) != len(probes):
        raise ValueError(f"{len(values_by_probe)} values for {len(probes)} probes.")

    def score(selected) -> dict:
        per_item = defaultdict(list)  # (set, item) -> values
        for v, p in selected:
            per_item[(p.set, p.item)].append(v)
        out, weights = {}, {}
        for s in SETS:
            means = [sum(v) / len(v) for (s2, _), v in per_item.items() if s2 == s]
            out[s] = sum(means) / len(means) if means else None
            weights[s] = len(means)
        total = sum(weights[s] for s in SETS if out[s] is not None)
        combined = sum(weights[s] * out[s] for s in SETS if out[s] is not None) / total if total else None
        return {"K": combined, "K_para": out["paraphrase"], "K_once": out["once"],
                "n_para": weights["paraphrase"], "n_once": weights["once"]}

    pairs = list(zip(values_by_probe, probes))
    result = score(pairs)
    result["by_kind"] = {}
    for kind in KINDS:
        sub = score([(v, p) for v, p in pairs if p.kind == kind])
        result["by_kind"][kind] = {k: sub[k] for k in ("K", "K_para", "K_once")}
    return result


def acquisition(k_cl: float, k_pt: float) -> float:
    """A in percent: 100 (K_CL - K_PT) / |K_PT| (Eq. 4 with |K_PT|: the only sign convention under which Tables 1-2 agree)."""
    return 100.0 * (k_cl - k_pt) / abs(k_pt)


def forgetting(p_cl: float, p_pt: float) -> float:
    """F in percent: -100 (P_CL - P_PT) / P_PT (Eq. 5); positive when performance dropped."""
    return -100.0 * (p_cl - p_pt) / p_pt


def entity_perplexity(model, tokenizer, documents: list[str], entities: list[list[str]], batch_size: int = 16,
                      max_length: int | None = None, progress: bool = False) -> list[float | None]:
    """Per document, the mean over its entity occurrences of exp(mean NLL of the occurrence's tokens given the
    document before them) (Fig. 10, App. B.1). An occurrence is a whole-word match of one of the document's
    entity strings; its tokens are those whose character span overlaps the match. Each document is preceded by
    the EOS token (the separator before every document of the packed training data), so an entity at the very
    start is scored too. Documents are cut to `max_length` tokens (EOS included); occurrences cut off are
    skipped. None for a document with no scored occurrence. Needs a fast tokenizer (character offsets)."""
    import math
    import re

    from tqdm import tqdm

    if len(documents) != len(entities):
        raise UserError(f"Entity perplexity needs one entity list per document; got {len(entities)} lists for "
                        f"{len(documents)} documents.")
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"Entity perplexity needs a fast tokenizer (character offsets); "
                        f"got {type(tokenizer).__name__}.")
    start_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start_id
    rows, occurrences = [], []  # per document: token ids; list of token-position lists, one per occurrence
    for text, names in zip(documents, entities):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = ([start_id] + encoded["input_ids"])[:max_length]
        offsets = ([(0, 0)] + [tuple(o) for o in encoded["offset_mapping"]])[:len(ids)]
        found = []
        for name in dict.fromkeys(names):
            for match in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text):
                positions = [j for j in range(1, len(ids))
                             if offsets[j][0] < match.end() and offsets[j][1] > match.start()]
                if positions and offsets[positions[-1]][1] >= match.end():  # not cut off by max_length
                    found.append(positions)
        rows.append(ids)
        occurrences.append(found)

    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
    result: list[float | None] = [None] * len(rows)
    was_training = _eval_mode(model)
    for b in tqdm(range(0, len(order), batch_size), disable=not progress, desc="entity perplexity"):
        batch = order[b:b + batch_size]
        logp, _ = _token_log_probs(model, [rows[i] for i in batch], pad_id)
        for r, i in enumerate(batch):
            perplexities = [math.exp(-logp[r, [j - 1 for j in positions]].mean().item())
                            for positions in occurrences[i]]
            if perplexities:
                result[i] = sum(perplexities) / len(perplexities)
    model.train(was_training)
    return result
