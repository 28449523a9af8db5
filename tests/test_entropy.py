"""The measurement core (ke.entropy, ke.data, ke.models checkpoints) against independent computations:
memory coefficients rebuilt from each layer's weights, attention and next-token entropy from the model's own
attention weights and logits, closed forms for entropy_of."""
from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import ke.entropy
import ke.models
from conftest import WORDS, make_texts, save_tiny_model
from ke.data import load_documents
from ke.entropy import (EntropySettings, entropy_key, entropy_of, load_coefficients, load_measurement_data,
                        load_per_document, measure,
                        run_entropy, run_entropy_many, top1_share)
from ke.stats import bootstrap_interval
from ke.storage import read_cached
from ke.errors import UserError
from ke.models import STEP_BRANCH, find_ffn_layers, list_checkpoints, load_model, resolve_checkpoint

DENSE_ARCHS = ["olmo", "olmo2", "llama", "qwen2", "mistral", "gpt_neox", "gpt2"]
HAND_ARCHS = ["olmo", "gpt_neox", "gpt2"]  # SwiGLU, GELU + bias, GELU-tanh in a transposed Conv1D
ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "gelu_new": lambda t: F.gelu(t, approximate="tanh")}
DOCS = make_texts(7, seed=1, min_words=3, max_words=40)  # unequal lengths, so batches hold padding
SEQ_LEN = 64


# ---------------------------------------------------------------- independent reference computation

def blocks(model):
    base = model.base_model
    return base.layers if hasattr(base, "layers") else base.h


def affine(x, module, transposed=False):
    """x W^T + b of an nn.Linear, or x W + b of GPT-2's Conv1D (weight stored [d_in, d_out])."""
    y = x @ (module.weight if transposed else module.weight.T)
    return y if module.bias is None else y + module.bias


def hand_coefficients(mlp, x, config):
    """Memory coefficients C = f(x K^T) (Eq. 1) of one FFN from its input x, with plain torch ops."""
    if hasattr(mlp, "gate_proj"):  # SwiGLU: act(gate(x)) * up(x)
        c = ACTIVATIONS[config.hidden_act](affine(x, mlp.gate_proj)) * affine(x, mlp.up_proj)
        out = affine(c, mlp.down_proj)
    elif hasattr(mlp, "dense_h_to_4h"):  # GPT-NeoX
        c = ACTIVATIONS[config.hidden_act](affine(x, mlp.dense_h_to_4h))
        out = affine(c, mlp.dense_4h_to_h)
    else:  # GPT-2
        c = ACTIVATIONS[config.activation_function](affine(x, mlp.c_fc, transposed=True))
        out = affine(c, mlp.c_proj, transposed=True)
    # The FFN output must be sum_i c_i v_i: checks that c really is what the output projection consumes.
    torch.testing.assert_close(out, mlp(x), rtol=1e-5, atol=1e-6)
    return c


def hand_entropy(weights: torch.Tensor) -> float:
    p = weights.double() / weights.double().sum()
    return float(-(p * p.log()).sum())


@torch.no_grad()
def run_capturing_ffn_inputs(model, ids, **kwargs):
    """Forward pass that records every layer's FFN input (forward pre-hook on the MLP block)."""
    inputs = {}
    handles = [block.mlp.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
               for i, block in enumerate(blocks(model))]
    try:
        out = model(input_ids=ids, **kwargs)
    finally:
        for h in handles:
            h.remove()
    coeffs = [hand_coefficients(block.mlp, inputs[i], model.config) for i, block in enumerate(blocks(model))]
    return out, coeffs


@torch.no_grad()
def per_document_reference(model, token_lists, start=0):
    """Eqs. 2-3 and NTP entropy literally: each document alone (no padding, no mask), mean over its tokens
    from position `start` on, then mean over documents."""
    docs = len(token_lists)
    totals = {"abs": 0, "relu": 0, "attention": 0, "ntp": 0.0}
    per_doc = []
    for tokens in token_lists:
        out, coeffs = run_capturing_ffn_inputs(model, torch.tensor([tokens]), output_attentions=True)
        per_doc.append(torch.stack([c[0, start:].abs().double().mean(0) for c in coeffs]))
        totals["abs"] = totals["abs"] + per_doc[-1]
        totals["relu"] = totals["relu"] + torch.stack([c[0, start:].clamp(min=0).double().mean(0) for c in coeffs])
        per_query = [-torch.special.xlogy(a[0].double(), a[0].double()).sum(-1) for a in out.attentions]  # [H, T]
        totals["attention"] = totals["attention"] + torch.stack([h[:, start:].mean(-1) for h in per_query])  # [L, H]
        logp = torch.log_softmax(out.logits[0, start:].double(), -1)
        totals["ntp"] += float(-(logp.exp() * logp).sum(-1).mean())
    ref = {k: v / docs for k, v in totals.items()}
    ref["per_document"] = torch.stack(per_doc)  # [docs, layers, m]
    ref["layer_entropy"] = [hand_entropy(c) for c in ref["abs"]]
    ref["relu_layer_entropy"] = [hand_entropy(c) for c in ref["relu"]]
    ref["layer_attention_entropy"] = ref["attention"].mean(1).tolist()
    return ref


def token_lists(tokenizer, documents, seq_len):
    return [ids[:seq_len] for ids in tokenizer(documents)["input_ids"] if ids]


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def olmo(tiny_models):
    return load_model(str(tiny_models("olmo")))


@pytest.fixture(scope="module", params=HAND_ARCHS)
def by_hand(request, tiny_models):
    """measure() with every option on a batched, padded run, beside the per-document reference."""
    folder = tiny_models(request.param)
    loaded = load_model(str(folder))  # default attention implementation: measure must switch to eager itself
    settings = EntropySettings(seq_len=SEQ_LEN, batch_size=3, attention=True, ntp=True, relu=True,
                               per_document=True)
    result = measure(loaded.model, loaded.tokenizer, DOCS, settings, progress=False)
    eager = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    tokens = token_lists(AutoTokenizer.from_pretrained(folder), DOCS, SEQ_LEN)
    return SimpleNamespace(result=result, ref=per_document_reference(eager, tokens), tokens=tokens)


# ---------------------------------------------------------------- Eq. 2, Eq. 3, NTP against the hand computation

def test_coefficients_by_hand(by_hand):
    measured = by_hand.result.mean_abs_coefficients
    assert measured.shape == by_hand.ref["abs"].shape
    torch.testing.assert_close(measured.double(), by_hand.ref["abs"], rtol=1e-5, atol=1e-7)
    assert by_hand.result.num_docs == len(DOCS)
    assert by_hand.result.num_tokens == sum(map(len, by_hand.tokens))


def test_layer_entropy_by_hand(by_hand):
    r = by_hand.result
    assert r.layer_entropy == pytest.approx(by_hand.ref["layer_entropy"], abs=1e-6)
    assert r.knowledge_entropy == pytest.approx(sum(by_hand.ref["layer_entropy"]), abs=1e-6)
    assert r.knowledge_entropy == pytest.approx(sum(r.layer_entropy), abs=1e-9)


def test_relu_variant_by_hand(by_hand):
    r = by_hand.result
    assert r.relu_layer_entropy == pytest.approx(by_hand.ref["relu_layer_entropy"], abs=1e-6)
    assert r.relu_knowledge_entropy == pytest.approx(sum(by_hand.ref["relu_layer_entropy"]), abs=1e-6)
    assert all(abs(a - b) > 1e-4 for a, b in zip(r.relu_layer_entropy, r.layer_entropy))  # really another quantity


def test_attention_entropy_by_hand(by_hand):
    r, ref = by_hand.result, by_hand.ref
    torch.testing.assert_close(torch.tensor(r.head_attention_entropy, dtype=torch.float64), ref["attention"],
                               rtol=0, atol=1e-5)
    assert r.layer_attention_entropy == pytest.approx(ref["layer_attention_entropy"], abs=1e-5)
    assert r.attention_entropy == pytest.approx(sum(ref["layer_attention_entropy"]), abs=1e-5)


def test_ntp_entropy_by_hand(by_hand):
    assert by_hand.result.ntp_entropy == pytest.approx(by_hand.ref["ntp"], abs=1e-5)


def test_per_document_by_hand(by_hand):
    r, ref = by_hand.result, by_hand.ref
    assert r.per_document.dtype == torch.float32
    assert tuple(r.per_document.shape) == (len(DOCS), *r.mean_abs_coefficients.shape)
    torch.testing.assert_close(r.per_document.double(), ref["per_document"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(r.per_document.double().mean(0), r.mean_abs_coefficients.double(), rtol=1e-5, atol=1e-8)


def test_top1_share_by_hand(by_hand):
    cbar = by_hand.result.mean_abs_coefficients.double()
    k = math.ceil(cbar.shape[1] / 100)
    by_sorting = [float(row.sort(descending=True).values[:k].sum() / row.sum()) for row in cbar]
    assert by_hand.result.layer_top1_share == pytest.approx(by_sorting, rel=1e-6)  # C-bar stored as float32


@pytest.mark.parametrize("m, k", [(1, 1), (100, 1), (101, 2), (250, 3), (700, 7), (8192, 82)])
def test_top1_share_closed_form(m, k):
    """Slots 0..k-1 hold weight 10, the other m-k hold 1: the top ceil(m/100) slots hold 10k / (10k + m - k)."""
    weights = torch.ones(m)
    weights[torch.randperm(m, generator=torch.Generator().manual_seed(m))[:k]] = 10.0
    assert float(top1_share(weights)) == pytest.approx(10 * k / (10 * k + m - k), rel=1e-12)
    assert float(top1_share(torch.full((m,), 2.0))) == pytest.approx(k / m, rel=1e-12)  # uniform: exactly 1%-ish


def test_per_document_feeds_a_bootstrap(olmo):
    """The per-document tensor is what ke.stats.bootstrap_interval resamples: its interval brackets the
    measured knowledge entropy."""
    result = measure(olmo.model, olmo.tokenizer, DOCS, EntropySettings(seq_len=SEQ_LEN, per_document=True),
                     progress=False)
    low, high = bootstrap_interval(result.per_document.numpy(), lambda m: float(entropy_of(torch.from_numpy(m)).sum()),
                                   draws=200)
    assert low < result.knowledge_entropy < high or low == pytest.approx(high)


@torch.no_grad()
def test_skip_first_by_hand(olmo, tiny_models):
    """skip_first leaves position 0 out of every per-document mean (coefficients, ReLU, attention, NTP); a
    one-token document has nothing left and is dropped."""
    one_token = next(w for w in WORDS if len(olmo.tokenizer(w)["input_ids"]) == 1)
    settings = EntropySettings(seq_len=SEQ_LEN, batch_size=3, attention=True, ntp=True, relu=True, skip_first=True,
                               per_document=True)
    result = measure(olmo.model, olmo.tokenizer, [one_token, *DOCS], settings, progress=False)
    folder = tiny_models("olmo")
    eager = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    tokens = token_lists(AutoTokenizer.from_pretrained(folder), DOCS, SEQ_LEN)
    ref = per_document_reference(eager, tokens, start=1)
    assert (result.num_docs, result.num_tokens) == (len(DOCS), sum(len(t) - 1 for t in tokens))
    torch.testing.assert_close(result.mean_abs_coefficients.double(), ref["abs"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(result.per_document.double(), ref["per_document"], rtol=1e-5, atol=1e-7)
    assert result.layer_entropy == pytest.approx(ref["layer_entropy"], abs=1e-6)
    assert result.relu_layer_entropy == pytest.approx(ref["relu_layer_entropy"], abs=1e-6)
    torch.testing.assert_close(torch.tensor(result.head_attention_entropy, dtype=torch.float64), ref["attention"],
                               rtol=0, atol=1e-5)
    assert result.ntp_entropy == pytest.approx(ref["ntp"], abs=1e-5)
    plain = measure(olmo.model, olmo.tokenizer, DOCS, EntropySettings(seq_len=SEQ_LEN), progress=False)
    assert all(abs(a - b) > 1e-5 for a, b in zip(result.layer_entropy, plain.layer_entropy))  # really differs


# ---------------------------------------------------------------- entropy_of closed forms

@pytest.mark.parametrize("m", [1, 2, 48, 8192])
def test_entropy_of_uniform_is_ln_m(m):
    assert float(entropy_of(torch.full((m,), 0.37))) == pytest.approx(math.log(m), abs=1e-12)


def test_entropy_of_one_hot_is_zero():
    value = entropy_of(torch.tensor([0.0, 0.0, 5.0, 0.0]))
    assert not torch.isnan(value) and float(value) == 0.0


def test_entropy_of_two_points_and_rows():
    rows = torch.tensor([[1.0, 3.0], [2.0, 2.0]])  # unnormalised weights; row-wise
    expected = [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2)]
    assert entropy_of(rows).tolist() == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- invariances

def test_batch_size_invariance(olmo):
    results = [measure(olmo.model, olmo.tokenizer, DOCS,
                       EntropySettings(seq_len=SEQ_LEN, batch_size=b, attention=True, ntp=True), progress=False)
               for b in (1, 3, len(DOCS))]
    first = results[0]
    for r in results[1:]:
        assert r.layer_entropy == pytest.approx(first.layer_entropy, abs=1e-6)
        assert r.knowledge_entropy == pytest.approx(first.knowledge_entropy, abs=1e-6)
        assert r.attention_entropy == pytest.approx(first.attention_entropy, abs=1e-6)
        assert r.ntp_entropy == pytest.approx(first.ntp_entropy, abs=1e-6)
        torch.testing.assert_close(r.mean_abs_coefficients, first.mean_abs_coefficients, rtol=1e-5, atol=1e-7)
        assert (r.num_docs, r.num_tokens) == (first.num_docs, first.num_tokens)


def test_padding_invariance(olmo):
    """A short document in a batch with much longer ones counts exactly as when measured alone."""
    short, *longs = [make_texts(1, seed=5, min_words=3, max_words=3)[0]] + make_texts(2, seed=6, min_words=50,
                                                                                       max_words=60)
    settings = EntropySettings(seq_len=SEQ_LEN, batch_size=3, attention=True, ntp=True)
    batched = measure(olmo.model, olmo.tokenizer, [short, *longs], settings, progress=False)
    alone = [measure(olmo.model, olmo.tokenizer, [doc], settings, progress=False) for doc in (short, *longs)]
    assert alone[0].num_tokens * 10 < alone[1].num_tokens  # the batch really is mostly padding for `short`
    # Every quantity is a mean over documents, so the batched value is the mean of the per-document values.
    mean_alone = torch.stack([a.mean_abs_coefficients for a in alone]).double().mean(0)
    torch.testing.assert_close(batched.mean_abs_coefficients.double(), mean_alone, rtol=1e-6, atol=1e-8)
    assert batched.layer_entropy == pytest.approx(entropy_of(mean_alone).tolist(), abs=1e-6)
    heads_alone = torch.tensor([a.head_attention_entropy for a in alone]).mean(0)
    torch.testing.assert_close(torch.tensor(batched.head_attention_entropy), heads_alone, rtol=0, atol=1e-6)
    assert batched.ntp_entropy == pytest.approx(sum(a.ntp_entropy for a in alone) / 3, abs=1e-6)
    assert batched.num_tokens == sum(a.num_tokens for a in alone)


def test_truncation_to_seq_len(olmo):
    words = [w for w in WORDS if len(olmo.tokenizer(w)["input_ids"]) == 1]
    assert len(words) > 10  # precondition: these words are one token each, so word prefixes are token prefixes
    long_doc = " ".join(words[i % len(words)] for i in range(30))
    settings = EntropySettings(seq_len=8, batch_size=2)
    truncated = measure(olmo.model, olmo.tokenizer, [long_doc], settings, progress=False)
    prefix = measure(olmo.model, olmo.tokenizer, [" ".join(long_doc.split()[:8])], settings, progress=False)
    assert truncated.num_tokens == prefix.num_tokens == 8
    torch.testing.assert_close(truncated.mean_abs_coefficients, prefix.mean_abs_coefficients, rtol=1e-6, atol=0)
    assert truncated.knowledge_entropy == pytest.approx(prefix.knowledge_entropy, abs=1e-9)


def test_empty_documents_are_dropped(olmo):
    settings = EntropySettings(seq_len=SEQ_LEN, batch_size=2)
    clean = measure(olmo.model, olmo.tokenizer, DOCS[:4], settings, progress=False)
    messy = measure(olmo.model, olmo.tokenizer, ["", DOCS[0], "   ", *DOCS[1:4], "\n"], settings, progress=False)
    assert (messy.num_docs, messy.num_tokens) == (clean.num_docs, clean.num_tokens) == (4, clean.num_tokens)
    assert messy.layer_entropy == pytest.approx(clean.layer_entropy, abs=1e-6)
    with pytest.raises(UserError):
        measure(olmo.model, olmo.tokenizer, ["", "  "], settings, progress=False)


# ---------------------------------------------------------------- official-code compatibility (analysis/entropy.py)

@torch.no_grad()
def test_count_padding_by_hand(olmo, tiny_models):
    seq_len = 48
    settings = EntropySettings(seq_len=seq_len, batch_size=2, count_padding=True)
    counted = measure(olmo.model, olmo.tokenizer, DOCS, settings, progress=False)

    folder = tiny_models("olmo")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens = token_lists(tokenizer, DOCS, seq_len)
    assert len({len(t) for t in tokens}) > 1 and max(map(len, tokens)) < seq_len  # unequal, all padded
    ids = torch.tensor([t + [tokenizer.pad_token_id] * (seq_len - len(t)) for t in tokens])
    _, coeffs = run_capturing_ffn_inputs(model, ids)  # input_ids only, as the official script
    by_hand = torch.stack([c.abs().double().mean((0, 1)) for c in coeffs])  # over all positions of all rows
    torch.testing.assert_close(counted.mean_abs_coefficients.double(), by_hand, rtol=1e-5, atol=1e-7)
    assert counted.layer_entropy == pytest.approx([hand_entropy(c) for c in by_hand], abs=1e-6)
    assert counted.num_tokens == len(tokens) * seq_len

    skipped = measure(olmo.model, olmo.tokenizer, DOCS,
                      EntropySettings(seq_len=seq_len, batch_size=2, count_padding=True, skip_first=True),
                      progress=False)
    skipped_by_hand = torch.stack([c[:, 1:].abs().double().mean((0, 1)) for c in coeffs])
    torch.testing.assert_close(skipped.mean_abs_coefficients.double(), skipped_by_hand, rtol=1e-5, atol=1e-7)
    assert skipped.num_tokens == len(tokens) * (seq_len - 1)

    default = measure(olmo.model, olmo.tokenizer, DOCS, EntropySettings(seq_len=seq_len, batch_size=2),
                      progress=False)
    assert all(abs(a - b) > 1e-4 for a, b in zip(counted.layer_entropy, default.layer_entropy))


# ---------------------------------------------------------------- architectures

@pytest.mark.parametrize("arch", DENSE_ARCHS)
def test_every_dense_architecture(arch, tiny_models):
    loaded = load_model(str(tiny_models(arch)))
    config = loaded.model.config
    ffn_dim = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.n_embd
    result = measure(loaded.model, loaded.tokenizer, DOCS[:4], EntropySettings(seq_len=32, batch_size=2),
                     progress=False)
    assert tuple(result.mean_abs_coefficients.shape) == (config.num_hidden_layers, ffn_dim)
    assert [layer.ffn_dim for layer in find_ffn_layers(loaded.model)] == [ffn_dim] * config.num_hidden_layers
    assert torch.isfinite(result.mean_abs_coefficients).all()
    assert all(0 < h <= math.log(ffn_dim) + 1e-9 for h in result.layer_entropy)
    assert math.isfinite(result.knowledge_entropy)


def test_mixture_of_experts_is_refused(tiny_models):
    loaded = load_model(str(tiny_models("qwen2_moe")))
    with pytest.raises(UserError, match="mixture-of-experts"):
        measure(loaded.model, loaded.tokenizer, DOCS[:2], EntropySettings(seq_len=32), progress=False)


# ---------------------------------------------------------------- run_entropy: files, provenance, cache

@pytest.fixture
def counted_loads(monkeypatch):
    calls = []
    real = ke.models.load_model

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(ke.models, "load_model", counting)
    return calls


def test_run_entropy_writes_files(tiny_models, tmp_path, olmo):
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS))
    settings = EntropySettings(seq_len=32, batch_size=3)
    record = run_entropy(str(tiny_models("olmo")), str(data), tmp_path / "out", settings=settings, progress=False)
    saved = json.loads((tmp_path / "out" / "entropy.json").read_text())
    assert saved["knowledge_entropy"] == pytest.approx(record["knowledge_entropy"], abs=1e-12)
    for name in ("knowledge_entropy", "layer_entropy", "num_docs", "num_tokens", "provenance"):
        assert name in saved
    prov = saved["provenance"]
    for name in ("model", "revision", "commit", "ke_version", "data", "seq_len", "dtype", "device"):
        assert name in prov
    assert (prov["model"], prov["data"], prov["seq_len"], prov["dtype"], prov["device"]) == (
        str(tiny_models("olmo")), str(data), 32, "float32", "cpu")
    assert prov["ke_version"] == ke.__version__ and saved["num_docs"] == len(DOCS)
    coefficients = load_file(str(tmp_path / "out" / "coefficients.safetensors"))["mean_abs_coefficients"]
    config = olmo.model.config
    assert tuple(coefficients.shape) == (config.num_hidden_layers, config.intermediate_size)
    assert saved["layer_entropy"] == pytest.approx(entropy_of(coefficients).tolist(), abs=1e-5)
    direct = measure(olmo.model, olmo.tokenizer, DOCS, settings, progress=False)
    assert saved["knowledge_entropy"] == pytest.approx(direct.knowledge_entropy, abs=1e-6)


def test_run_entropy_cache(tiny_models, tmp_path, counted_loads):
    data, out = tmp_path / "docs.txt", tmp_path / "out"
    data.write_text("\n".join(DOCS))
    source, settings = str(tiny_models("olmo")), EntropySettings(seq_len=32, batch_size=3)
    first = run_entropy(source, str(data), out, settings=settings, progress=False)
    assert len(counted_loads) == 1
    again = run_entropy(source, str(data), out, settings=EntropySettings(seq_len=32, batch_size=3), progress=False)
    assert again == first and len(counted_loads) == 1  # served from entropy.json, model never loaded
    shorter = run_entropy(source, str(data), out, settings=EntropySettings(seq_len=16, batch_size=3),
                          progress=False)
    assert len(counted_loads) == 2 and shorter["provenance"]["seq_len"] == 16
    fewer = run_entropy(source, str(data), out, max_docs=3, settings=EntropySettings(seq_len=16, batch_size=3),
                        progress=False)
    assert len(counted_loads) == 3 and fewer["num_docs"] == 3
    other = run_entropy(str(tiny_models("gpt2")), str(data), out, max_docs=3,
                        settings=EntropySettings(seq_len=16, batch_size=3), progress=False)
    assert len(counted_loads) == 4 and other["ffn_dim"] == 128


def test_run_entropy_cache_sees_changed_data_file(tiny_models, tmp_path, counted_loads):
    """Same path, new contents: the cached result no longer describes this data."""
    data, out = tmp_path / "docs.txt", tmp_path / "out"
    data.write_text("\n".join(DOCS[:3]))
    source, settings = str(tiny_models("olmo")), EntropySettings(seq_len=32, batch_size=3)
    first = run_entropy(source, str(data), out, settings=settings, progress=False)
    data.write_text("\n".join(DOCS))
    second = run_entropy(source, str(data), out, settings=settings, progress=False)
    assert len(counted_loads) == 2 and second["num_docs"] == len(DOCS) != first["num_docs"]


def test_run_entropy_cache_sees_changed_model_folder(tokenizer_dir, tmp_path, counted_loads):
    """Same folder, other weights (e.g. a retrained checkpoint): the cached result must not be returned."""
    data, out, folder = tmp_path / "docs.txt", tmp_path / "out", tmp_path / "model"
    data.write_text("\n".join(DOCS))
    settings = EntropySettings(seq_len=32, batch_size=3)
    first = run_entropy(str(save_tiny_model("olmo", tokenizer_dir, folder, seed=0)), str(data), out,
                        settings=settings, progress=False)
    second = run_entropy(str(save_tiny_model("olmo", tokenizer_dir, folder, seed=1)), str(data), out,
                         settings=settings, progress=False)
    assert len(counted_loads) == 2 and second["knowledge_entropy"] != first["knowledge_entropy"]


def test_cache_goes_through_storage(tiny_models, tmp_path, counted_loads, monkeypatch):
    """entropy.json is a ke.storage cached record under entropy_key; another code version is a cache miss."""
    data, out = tmp_path / "docs.txt", tmp_path / "out"
    data.write_text("\n".join(DOCS))
    source, settings = str(tiny_models("olmo")), EntropySettings(seq_len=32, batch_size=3)
    record = run_entropy(source, str(data), out, settings=settings, progress=False)
    key = entropy_key(source, None, str(data), None, "float32", settings)
    assert read_cached(out / "entropy.json", key) == record
    monkeypatch.setattr(ke.entropy, "__version__", "0.0.0-other")
    assert read_cached(out / "entropy.json", entropy_key(source, None, str(data), None, "float32", settings)) is None
    run_entropy(source, str(data), out, settings=settings, progress=False)
    assert len(counted_loads) == 2


def test_run_entropy_per_document_file(tiny_models, tmp_path):
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS))
    settings = EntropySettings(seq_len=32, batch_size=3, per_document=True)
    record = run_entropy(str(tiny_models("olmo")), str(data), tmp_path / "out", settings=settings, progress=False)
    rows = load_per_document(tmp_path / "out")
    assert tuple(rows.shape) == (len(DOCS), record["num_layers"], record["ffn_dim"]) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.double().mean(0), load_coefficients(tmp_path / "out").double(), rtol=1e-5,
                               atol=1e-8)
    assert record["layer_top1_share"] == pytest.approx(top1_share(load_coefficients(tmp_path / "out")).tolist(),
                                                       rel=1e-6)
    assert record["provenance"]["num_processes"] == 1 and record["provenance"]["input"] == "text"
    run_entropy(str(tiny_models("olmo")), str(data), tmp_path / "plain", settings=EntropySettings(seq_len=32),
                progress=False)
    with pytest.raises(UserError, match="--per-document"):
        load_per_document(tmp_path / "plain")


# ---------------------------------------------------------------- token ids as input

def write_rows(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_token_id_rows_are_measured_as_given(olmo, tmp_path):
    """Rows with input_ids are measured from the ids (the text beside them is ignored, never re-encoded),
    truncated to seq_len; the same ids as text-derived tokens give the same result as the text."""
    tokens = token_lists(olmo.tokenizer, DOCS, 10_000)
    rows = [{"text": "decoy words that are not these ids", "input_ids": ids} for ids in tokens]
    data = write_rows(tmp_path / "ids.jsonl", rows)
    documents = load_measurement_data(str(data))
    assert documents == tokens
    settings = EntropySettings(seq_len=16, batch_size=3)
    from_ids = measure(olmo.model, olmo.tokenizer, documents, settings, progress=False)
    from_text = measure(olmo.model, olmo.tokenizer, DOCS, settings, progress=False)
    assert from_ids.num_tokens == from_text.num_tokens == sum(min(len(t), 16) for t in tokens)
    assert max(map(len, tokens)) > 16  # truncation really happens
    torch.testing.assert_close(from_ids.mean_abs_coefficients, from_text.mean_abs_coefficients, rtol=1e-6, atol=0)
    # ids the tokenizer would never produce from text: measured all the same
    odd = [[5, 5, 5, 7], [9, 3]]
    direct = measure(olmo.model, olmo.tokenizer, odd, settings, progress=False)
    from_file = load_measurement_data(str(write_rows(tmp_path / "odd.jsonl", [{"input_ids": r} for r in odd])))
    assert from_file == odd and direct.num_tokens == 6
    with torch.no_grad():
        _, coeffs = run_capturing_ffn_inputs(olmo.model, torch.tensor([odd[1]]))
        alone = measure(olmo.model, olmo.tokenizer, [odd[1]], settings, progress=False)
    torch.testing.assert_close(alone.mean_abs_coefficients.double(),
                               torch.stack([c[0].abs().double().mean(0) for c in coeffs]), rtol=1e-5, atol=1e-7)


def test_token_id_rows_through_run_entropy(tiny_models, tmp_path, olmo):
    tokens = token_lists(olmo.tokenizer, DOCS, SEQ_LEN)
    data = write_rows(tmp_path / "first_batch.jsonl", [{"text": t, "input_ids": i} for t, i in zip(DOCS, tokens)])
    record = run_entropy(str(tiny_models("olmo")), str(data), tmp_path / "out", max_docs=4,
                         settings=EntropySettings(seq_len=SEQ_LEN), progress=False)
    direct = measure(olmo.model, olmo.tokenizer, tokens[:4], EntropySettings(seq_len=SEQ_LEN), progress=False)
    assert record["provenance"]["input"] == "token_ids" and record["num_docs"] == 4
    assert record["knowledge_entropy"] == pytest.approx(direct.knowledge_entropy, abs=1e-9)


def test_text_jsonl_still_works_and_bad_rows_are_named(tmp_path):
    assert load_measurement_data(str(write_rows(tmp_path / "t.jsonl", [{"text": d} for d in DOCS])), 3) == DOCS[:3]
    mixed = write_rows(tmp_path / "m.jsonl", [{"text": "fine"}, {"input_ids": []}, {"input_ids": [4, 2]}])
    assert load_measurement_data(str(mixed)) == ["fine", [4, 2]]  # the empty document is dropped
    for bad in ({"content": "neither"}, {"input_ids": ["a", "b"]}, {"input_ids": [1, -2]}, {"input_ids": "1 2"},
                {"input_ids": [1.5]}, [1, 2]):
        path = write_rows(tmp_path / "bad.jsonl", [{"text": "fine"}, bad])
        with pytest.raises(UserError, match="line 2 .*'input_ids'.*'text'"):
            load_measurement_data(str(path))
    (tmp_path / "broken.jsonl").write_text('{"input_ids": [1]}\nnot json\n')
    with pytest.raises(UserError, match="line 2"):
        load_measurement_data(str(tmp_path / "broken.jsonl"))
    (tmp_path / "docs.txt").write_text("one\ntwo\n")
    assert load_measurement_data(str(tmp_path / "docs.txt")) == ["one", "two"]  # other formats: load_documents


def test_token_ids_outside_the_vocabulary_are_refused(olmo):
    vocab = olmo.model.get_input_embeddings().num_embeddings
    with pytest.raises(UserError, match=f"token id {vocab}"):
        measure(olmo.model, olmo.tokenizer, [[1, 2], [3, vocab]], EntropySettings(seq_len=8), progress=False)


# ---------------------------------------------------------------- several checkpoints

@pytest.fixture
def run_folder(tokenizer_dir, tmp_path_factory):
    """A run folder with three differently initialised checkpoints step0, step10, step20."""
    root = tmp_path_factory.mktemp("run")
    for seed, step in enumerate((0, 10, 20)):
        save_tiny_model("olmo", tokenizer_dir, root / f"step{step}", seed=seed)
    return root


def test_run_entropy_many(run_folder, tmp_path, counted_loads):
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS))
    settings = EntropySettings(seq_len=32, batch_size=3)
    names = ["step0", "step10", "step20"]
    records = run_entropy_many(str(run_folder), names, str(data), tmp_path / "out", settings=settings,
                               progress=False)
    assert len(counted_loads) == 3
    for name, record in zip(names, records):
        alone = run_entropy(str(run_folder / name), str(data), tmp_path / "alone" / name, settings=settings,
                            progress=False)
        assert record["knowledge_entropy"] == pytest.approx(alone["knowledge_entropy"], abs=1e-12)
        assert json.loads((tmp_path / "out" / name / "entropy.json").read_text())["key"] == record["key"]
        assert (tmp_path / "out" / name / "coefficients.safetensors").exists()
    assert len({r["knowledge_entropy"] for r in records}) == 3  # three different models
    counted_loads.clear()
    # an interrupted run: one result is missing; only that checkpoint is measured again
    (tmp_path / "out" / "step10" / "entropy.json").unlink()
    again = run_entropy_many(str(run_folder), names, str(data), tmp_path / "out", settings=settings, progress=False)
    assert [a[0] for a in counted_loads] == [str(run_folder / "step10")]
    assert [r["knowledge_entropy"] for r in again] == pytest.approx([r["knowledge_entropy"] for r in records],
                                                                    abs=1e-12)
    # the same checkpoints as folders, or as listed Checkpoints: all served from the cache
    counted_loads.clear()
    as_folders = run_entropy_many(None, [run_folder / n for n in names], str(data), tmp_path / "out",
                                  settings=settings, progress=False)
    as_listed = run_entropy_many(str(run_folder), list_checkpoints(str(run_folder)), str(data), tmp_path / "out",
                                 settings=settings, progress=False)
    assert as_folders == as_listed == again and not counted_loads


def test_run_entropy_many_errors(run_folder, tmp_path):
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS))
    with pytest.raises(UserError, match="step5"):
        run_entropy_many(str(run_folder), ["step0", "step5"], str(data), tmp_path / "out", progress=False)
    shutil.copytree(run_folder / "step0", tmp_path / "other" / "step0")
    with pytest.raises(UserError, match="repeat"):
        run_entropy_many(None, [run_folder / "step0", tmp_path / "other" / "step0"], str(data), tmp_path / "out",
                         progress=False)
    with pytest.raises(UserError, match="--split"):
        run_entropy_many(str(run_folder), ["step0"], str(data), tmp_path / "out", split="layers", progress=False)
    assert not (tmp_path / "out").exists()


def test_run_entropy_many_hub_revisions(monkeypatch, tmp_path, tiny_models):
    """With a hub id, the names are revisions: each is loaded as (hub id, revision) into out_root/<revision>."""
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS[:3]))
    calls = []

    def fake_load(source, revision=None, **kwargs):
        calls.append((source, revision))
        return load_model(str(tiny_models("olmo")))
    monkeypatch.setattr(ke.models, "load_model", fake_load)
    records = run_entropy_many("org/model", ["step1", "step2"], str(data), tmp_path / "out",
                               settings=EntropySettings(seq_len=16), progress=False)
    assert calls == [("org/model", "step1"), ("org/model", "step2")]
    assert [r["key"]["revision"] for r in records] == ["step1", "step2"]
    assert (tmp_path / "out" / "step2" / "entropy.json").exists()


# ---------------------------------------------------------------- ke.data.load_documents

def test_load_documents_txt(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("first doc\n\n  \nsecond doc\nthird doc\n")
    assert load_documents(str(path)) == ["first doc", "second doc", "third doc"]
    assert load_documents(str(path), max_docs=2) == ["first doc", "second doc"]


def test_load_documents_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(DOCS)) + "\n\n")
    assert load_documents(str(path)) == DOCS
    assert load_documents(str(path), max_docs=3) == DOCS[:3]


def test_load_documents_saved_dataset(tmp_path):
    import datasets
    datasets.Dataset.from_dict({"text": DOCS, "n": list(range(len(DOCS)))}).save_to_disk(str(tmp_path / "ds"))
    assert load_documents(str(tmp_path / "ds")) == DOCS
    assert load_documents(str(tmp_path / "ds"), max_docs=2) == DOCS[:2]


@pytest.mark.parametrize("kind", ["txt", "jsonl", "dataset"])
def test_load_documents_max_docs_counts_non_empty_documents(tmp_path, kind):
    """Every format gives the first max_docs NON-EMPTY documents; empty ones never take a place."""
    texts = ["", "alpha", "  ", "beta", "gamma"]
    if kind == "txt":
        (tmp_path / "d.txt").write_text("\n".join(texts))
        spec = tmp_path / "d.txt"
    elif kind == "jsonl":
        (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts))
        spec = tmp_path / "d.jsonl"
    else:
        import datasets
        datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
        spec = tmp_path / "ds"
    assert load_documents(str(spec), max_docs=2) == ["alpha", "beta"]


def test_load_documents_errors(tmp_path):
    with pytest.raises(UserError, match="missing.txt"):
        load_documents(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError, match="empty.txt"):
        load_documents(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"content": "no text field"}\n')
    with pytest.raises(UserError, match="line 2"):
        load_documents(str(tmp_path / "bad.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(UserError, match="line 2"):
        load_documents(str(tmp_path / "broken.jsonl"))


def test_load_documents_jsonl_text_must_be_a_string(tmp_path):
    (tmp_path / "numbers.jsonl").write_text('{"text": "fine"}\n{"text": 5}\n')
    with pytest.raises(UserError, match="line 2"):  # not an AttributeError traceback from str.strip
        load_documents(str(tmp_path / "numbers.jsonl"))


# ---------------------------------------------------------------- checkpoints: local runs and hub branches

def make_run(root, model_dir, steps):
    for step in steps:
        shutil.copytree(model_dir, root / f"step{step}")
    return root


def test_list_local_checkpoints(tiny_models, tmp_path):
    run = make_run(tmp_path / "run", tiny_models("olmo"), [100, 0, 10])
    (run / "step5").mkdir()  # no config.json: not a checkpoint
    (run / "notes").mkdir()
    found = list_checkpoints(str(run))
    assert [c.step for c in found] == [0, 10, 100]
    assert [c.name for c in found] == ["step0", "step10", "step100"]
    assert [c.path for c in found] == [str(run / n) for n in ("step0", "step10", "step100")]
    assert all(c.revision is None for c in found)
    assert resolve_checkpoint(str(run), 10).path == str(run / "step10")
    with pytest.raises(UserError, match="step 7"):
        resolve_checkpoint(str(run), 7)
    with pytest.raises(UserError):
        list_checkpoints(str(tmp_path / "no_such_run"))


def test_step_branch_pattern():
    m = STEP_BRANCH.match("step738020-tokens3094B")
    assert (int(m.group(1)), int(m.group(2))) == (738020, 3094)
    m = STEP_BRANCH.match("step1000")
    assert (int(m.group(1)), m.group(2)) == (1000, None)
    assert STEP_BRANCH.match("main") is None and STEP_BRANCH.match("step12-extra") is None


def test_hub_checkpoints_come_from_branches(monkeypatch):
    import huggingface_hub
    branches = [("main", "a" * 40), ("step738020-tokens3094B", "0f3c" * 10), ("step1000-tokens4B", "9e1d" * 10),
                ("step20", "77ab" * 10), ("experiment", "b" * 40)]
    seen = []

    def fake_refs(repo_id, **kwargs):
        seen.append(repo_id)
        return SimpleNamespace(branches=[SimpleNamespace(name=n, target_commit=c) for n, c in branches],
                               tags=[], converts=[])
    monkeypatch.setattr(huggingface_hub, "list_repo_refs", fake_refs)
    found = list_checkpoints("allenai/OLMo-1B-hf")
    assert seen and seen[0] == "allenai/OLMo-1B-hf"
    assert [c.step for c in found] == [20, 1000, 738020]
    assert [c.name for c in found] == ["step20", "step1000-tokens4B", "step738020-tokens3094B"]
    assert [c.revision for c in found] == [c.name for c in found]
    assert [c.commit for c in found] == ["77ab" * 10, "9e1d" * 10, "0f3c" * 10]
    assert [c.tokens_billion for c in found] == [None, 4, 3094]
    assert all(c.path == "allenai/OLMo-1B-hf" for c in found)
    assert resolve_checkpoint("allenai/OLMo-1B-hf", 738020).revision == "step738020-tokens3094B"
    with pytest.raises(UserError, match="step 5"):
        resolve_checkpoint("allenai/OLMo-1B-hf", 5)


# ---------------------------------------------------------------- splitting documents over processes

@pytest.mark.parametrize("count, world", [(9, 2), (7, 3), (4, 4), (100, 7)])
def test_document_shares_cover_every_document_once(count, world):
    shares = [ke.entropy._share(count, world, rank) for rank in range(world)]
    assert shares[0][0] == 0 and shares[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))  # contiguous, in order
    sizes = [stop - start for start, stop in shares]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_more_processes_than_documents_is_refused(olmo, monkeypatch):
    monkeypatch.setattr(ke.entropy, "_processes", lambda: (4, 0))
    with pytest.raises(UserError, match="3 documents cannot be split over 4 processes"):
        measure(olmo.model, olmo.tokenizer, DOCS[:3], EntropySettings(seq_len=16), progress=False)


def test_process_device():
    """'auto' is accelerate's device of this process (here the CPU); an explicit device is kept."""
    assert ke.entropy.process_device("auto") == "cpu" and ke.entropy.process_device(None) == "cpu"
    assert ke.entropy.process_device("cpu") == "cpu" and ke.entropy.process_device("cuda:1") == "cuda:1"
    assert ke.entropy.process_device("cuda") == "cuda"  # one process: unchanged (load_model then says if none)
