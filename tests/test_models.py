"""FFN discovery from the module graph, checked against a hand recomputation of each family's FFN activation, and
hub checkpoint listing (one hub call per repo, offline fallback to the local cache) with fakes: no network."""
from __future__ import annotations

import copy
import math
import time
from types import SimpleNamespace

import pytest
import torch

import ke.models
from ke.errors import UserError
from ke.models import CHECKPOINT_BRANCH, find_ffn_layers, list_checkpoints, provenance, resolve_checkpoint
from ke.resuscitate import resuscitate

# ---------------------------------------------------------------- tiny models of every dense-FFN family

COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
# The hand path: (extra config, down, up, gate, activation) with module paths inside a decoder block, written from
# each family's modelling code; `activation` is a config attribute holding the name, or the name itself.
# A fused gate_up projection (gate == up) holds the gate in its first half of rows and the up branch in the second.
FAMILIES = {
    "olmo": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "olmo2": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "olmo3": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "llama": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "qwen2": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "qwen3": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "mistral": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "gemma": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "gemma2": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_activation"),
    "gemma3_text": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_activation"),
    "stablelm": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "cohere": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "granite": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "helium": ({"head_dim": 8}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "smollm3": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "exaone4": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "internlm3": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "seed_oss": ({}, "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "hidden_act"),
    "phi3": ({}, "mlp.down_proj", "mlp.gate_up_proj", "mlp.gate_up_proj", "hidden_act"),
    "glm": ({}, "mlp.down_proj", "mlp.gate_up_proj", "mlp.gate_up_proj", "hidden_act"),
    "glm4": ({}, "mlp.down_proj", "mlp.gate_up_proj", "mlp.gate_up_proj", "hidden_act"),
    "phi": ({}, "mlp.fc2", "mlp.fc1", None, "hidden_act"),
    "gpt2": ({}, "mlp.c_proj", "mlp.c_fc", None, "activation_function"),
    "openai-gpt": ({}, "mlp.c_proj", "mlp.c_fc", None, "gelu_tanh"),  # its afn "gelu" maps to the tanh form
    "gpt_bigcode": ({}, "mlp.c_proj", "mlp.c_fc", None, "activation_function"),
    "gpt_neo": ({"attention_types": [[["global", "local"], 1]]}, "mlp.c_proj", "mlp.c_fc", None,
                "activation_function"),
    "gpt_neox": ({}, "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", None, "hidden_act"),
    "gptj": ({"rotary_dim": 4}, "mlp.fc_out", "mlp.fc_in", None, "activation_function"),
    "codegen": ({"rotary_dim": 4}, "mlp.fc_out", "mlp.fc_in", None, "activation_function"),
    "opt": ({"ffn_dim": 64}, "fc2", "fc1", None, "activation_function"),
    "biogpt": ({}, "fc2", "fc1", None, "hidden_act"),
    "xglm": ({"ffn_dim": 64}, "fc2", "fc1", None, "activation_function"),
    "bloom": ({}, "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", None, "gelu_tanh"),  # BloomGelu: the tanh form
    "falcon": ({}, "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", None, "activation"),
    "starcoder2": ({}, "mlp.c_proj", "mlp.c_fc", None, "hidden_act"),
    "mpt": ({}, "ffn.down_proj", "ffn.up_proj", None, "gelu"),  # nn.GELU(approximate="none")
    "persimmon": ({}, "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", None, "hidden_act"),
    "nemotron": ({}, "mlp.down_proj", "mlp.up_proj", None, "hidden_act"),
    "arcee": ({}, "mlp.down_proj", "mlp.up_proj", None, "hidden_act"),
    "ctrl": ({"dff": 64}, "ffn.2", "ffn.0", None, "relu"),
}
MOE_FAMILIES = {
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
                  "shared_expert_intermediate_size": 16},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2},
}


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


HAND_ACTIVATIONS = {
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "gelu_tanh": gelu_tanh,
    "relu": lambda x: x.clamp(min=0),
    "relu2": lambda x: x.clamp(min=0) ** 2,
}


def build(family: str, extra: dict | None = None, seed: int = 0):
    """A tiny random model; every linear gets O(1) weights and non-zero biases, so a missed bias or a wrong
    activation shows as a large difference."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM
    config = CONFIG_MAPPING[family](**{**COMMON, **(FAMILIES[family][0] if family in FAMILIES else {}),
                                       **(extra or {})})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            module.weight.data.normal_(0, 0.3)
            if module.bias is not None:
                module.bias.data.normal_(0, 0.5)
    return model


def blocks_of(model):
    """The decoder blocks, found as the attribute paths transformers uses (the hand path)."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "biogpt.layers",
                 "transformer.blocks"):
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    raise AssertionError("no known block path")


def affine(module, x):
    """x W^T + b written out; GPT-2's Conv1D stores W transposed ([in, out])."""
    weight = module.weight.detach()
    weight = weight if type(module).__name__ == "Conv1D" else weight.t()
    return x @ weight + (module.bias.detach() if module.bias is not None else 0)


def rows_of(module):
    """W as [out, in], read off the module's action on the unit vectors (the bias subtracted)."""
    width = module.weight.shape[0 if type(module).__name__ == "Conv1D" else 1]
    return (affine(module, torch.eye(width)) - affine(module, torch.zeros(1, width))).t()


def captured_inputs(model, modules):
    seen = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, key=key: seen.setdefault(key, args[0].detach()))
               for key, m in modules.items()]
    with torch.no_grad():
        model(torch.tensor([[3, 17, 5, 99, 42, 8, 11, 64, 2, 7]]))
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ffn_found_and_coefficients_match_hand_recomputation(family):
    _, down, up, gate, activation = FAMILIES[family]
    model = build(family)
    layers = find_ffn_layers(model)
    blocks = blocks_of(model)
    assert len(layers) == len(blocks) == 2
    act = HAND_ACTIVATIONS[getattr(model.config, activation, activation)]
    for layer, block in zip(layers, blocks):
        assert layer.down is block.get_submodule(down) and layer.up is block.get_submodule(up)
        assert layer.gate is (block.get_submodule(gate) if gate else None)
        assert layer.fused == (gate == up)
        rows = rows_of(block.get_submodule(up))
        expected_rows = rows[layer.ffn_dim:] if gate == up else rows  # fused: the up half comes second
        torch.testing.assert_close(layer.up_rows()[0], expected_rows, rtol=0, atol=1e-6)
        seen = captured_inputs(model, {"x": block.get_submodule(up), "C": layer.down})
        x, c = seen["x"], seen["C"]
        pre = affine(block.get_submodule(up), x)  # [1, T, m] or [1, T, 2m] when fused
        if gate is None:
            expected = act(pre)
        elif gate == up:
            g, u = pre.chunk(2, dim=-1)
            expected = act(g) * u
        else:
            expected = act(affine(block.get_submodule(gate), x)) * pre
        assert c.shape == expected.shape and c.shape[-1] == layer.ffn_dim
        assert float(expected.abs().mean()) > 0.05
        torch.testing.assert_close(c, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", sorted(MOE_FAMILIES))
def test_mixture_of_experts_refused(family):
    model = build(family, MOE_FAMILIES[family])
    with pytest.raises(UserError, match="mixture-of-experts") as error:
        find_ffn_layers(model)
    assert "dense" in str(error.value) and str(error.value).count(". ") == 0


def test_unrecognisable_model_refused():
    with pytest.raises(UserError, match="decoder blocks"):
        find_ffn_layers(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)))


def coefficients_and_pre(model, layer, up_block_path, block):
    """C (input of the found down) and the up branch's pre-activation, of one layer, by the hand path."""
    seen = captured_inputs(model, {"x": block.get_submodule(up_block_path), "C": layer.down})
    pre = affine(block.get_submodule(up_block_path), seen["x"])
    return seen["C"].reshape(-1, seen["C"].shape[-1]), pre.reshape(-1, pre.shape[-1])  # OPT flattens to [T, m]


@pytest.mark.parametrize("family", ["llama", "phi3", "gpt2", "opt"])
def test_algorithm1_row_scaling_scales_exactly_one_slot(family):
    """Through up_rows(), resuscitate() scales slot i's coefficient by u_i (gated, fused) or its pre-activation
    by u_i (GELU/ReLU FFNs), and leaves every other slot of the layer as it was."""
    _, _, up, gate, activation = FAMILIES[family]
    model = build(family)
    ffn = find_ffn_layers(model)
    block, m, slot, u = blocks_of(model)[1], ffn[1].ffn_dim, 5, 3.0
    c_before, pre_before = coefficients_and_pre(model, ffn[1], up, block)
    cbar = torch.ones(2, m)
    cbar[1, slot] = 0.5
    factor = u * 0.5 / float(cbar[1].double().mean())  # Algorithm 1: u_i = q * mean(C-bar) / C-bar_i
    report = resuscitate(model, cbar, ratio=1e-6, factor=factor, layers=[1])
    assert report["selected"] == [1] and report["mean_multiplier"] == pytest.approx([u])
    c_after, pre_after = coefficients_and_pre(model, ffn[1], up, block)
    others = torch.arange(m) != slot
    if gate is not None:  # gated or fused: the coefficient itself scales by u
        torch.testing.assert_close(c_after[:, slot], u * c_before[:, slot], rtol=1e-5, atol=1e-6)
    else:  # the pre-activation scales, then the activation applies
        act = HAND_ACTIVATIONS[getattr(model.config, activation, activation)]
        torch.testing.assert_close(pre_after[:, slot], u * pre_before[:, slot], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c_after[:, slot], act(u * pre_before[:, slot]), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(c_after[:, slot], c_before[:, slot])
    torch.testing.assert_close(c_after[:, others], c_before[:, others], rtol=0, atol=0)
    if gate == up:  # fused: the gate half of the projection is untouched
        g_before, g_after = pre_before[:, :m], pre_after[:, :m]
        torch.testing.assert_close(g_after, g_before, rtol=0, atol=0)
        assert ffn[1].up_rows()[0].data_ptr() == ffn[1].up.weight.data[m].data_ptr()  # a view, not a copy


def test_discovery_runs_once_per_model_and_leaves_model_state(monkeypatch):
    model = build("gpt2", {"resid_pdrop": 0.5, "embd_pdrop": 0.5, "attn_pdrop": 0.5}).train()
    model.transformer.h[1].eval()  # mixed training flags must come back as they were
    modes = {name: m.training for name, m in model.named_modules()}
    probes = []
    real = ke.models._probe
    monkeypatch.setattr(ke.models, "_probe", lambda *a: probes.append(1) or real(*a))
    rng = torch.get_rng_state()
    first = find_ffn_layers(model)  # found despite dropout: the probe runs in eval mode
    assert torch.equal(torch.get_rng_state(), rng)
    assert {name: m.training for name, m in model.named_modules()} == modes
    second = find_ffn_layers(model)
    assert len(probes) == 1 and [l.down for l in second] == [l.down for l in first]
    twin = copy.deepcopy(model)
    assert find_ffn_layers(twin)[0].down is twin.transformer.h[0].mlp.c_proj and len(probes) == 2


def test_bfloat16_model_found():
    model = build("llama").to(torch.bfloat16)
    layer = find_ffn_layers(model)[0]
    assert layer.down is model.model.layers[0].mlp.down_proj and layer.gate is model.model.layers[0].mlp.gate_proj


# ---------------------------------------------------------------- hub checkpoints, with fakes

OLMO2 = [("main", "a" * 40), ("stage1-step1000-tokens5B", "11" * 20), ("stage1-step928646-tokens3896B", "12" * 20),
         ("stage2-ingredient1-step1000-tokens5B", "21" * 20), ("stage2-ingredient2-step1000-tokens5B", "22" * 20),
         ("stage2-ingredient1-step11931-tokens50B", "23" * 20), ("experiment", "b" * 40)]


@pytest.fixture(autouse=True)
def fresh_hub_state(monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants
    ke.models._HUB_REFS.clear()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", lambda *a, **k: fake_cache({}))
    yield
    ke.models._HUB_REFS.clear()


def fake_hub(monkeypatch, repos: dict, error: Exception | None = None) -> list:
    import huggingface_hub
    calls = []

    def list_repo_refs(repo_id, **kwargs):
        calls.append(repo_id)
        if error is not None:
            raise error
        return SimpleNamespace(branches=[SimpleNamespace(name=n, target_commit=c) for n, c in repos[repo_id]],
                               tags=[], converts=[])
    monkeypatch.setattr(huggingface_hub, "list_repo_refs", list_repo_refs)
    return calls


def fake_cache(repos: dict):
    """What scan_cache_dir returns: per cached repo, its revisions with the refs that point at them."""
    return SimpleNamespace(repos=[
        SimpleNamespace(repo_id=repo, repo_type="model", revisions=[
            SimpleNamespace(commit_hash=commit, refs=frozenset([name])) for name, commit in refs])
        for repo, refs in repos.items()])


def test_branch_names_parsed():
    m = CHECKPOINT_BRANCH.match("stage2-ingredient3-step11931-tokens50B")
    assert (m["stage"], m["ingredient"], m["step"], m["tokens"]) == ("2", "3", "11931", "50")
    m = CHECKPOINT_BRANCH.match("stage1-step140000-tokens294B")
    assert (m["stage"], m["ingredient"], m["step"], m["tokens"]) == ("1", None, "140000", "294")
    m = CHECKPOINT_BRANCH.match("step143000")
    assert (m["stage"], m["step"], m["tokens"]) == (None, "143000", None)
    for name in ("main", "step12-extra", "stage2-step", "ingredient1-step5", "stage1-step5-tokens3"):
        assert CHECKPOINT_BRANCH.match(name) is None


def test_one_hub_call_per_repo(monkeypatch):
    steps = list(range(0, 50_000, 1000))
    calls = fake_hub(monkeypatch, {"EleutherAI/pythia-14m": [(f"step{s}", f"{s:040x}") for s in steps],
                                   "allenai/OLMo-2-1124-7B": OLMO2})
    resolved = [resolve_checkpoint("EleutherAI/pythia-14m", s) for s in steps]
    assert [c.commit for c in resolved] == [f"{s:040x}" for s in steps]
    assert [c.step for c in list_checkpoints("EleutherAI/pythia-14m")] == steps
    assert calls == ["EleutherAI/pythia-14m"]
    list_checkpoints("allenai/OLMo-2-1124-7B")
    resolve_checkpoint("allenai/OLMo-2-1124-7B", 928646)
    assert calls == ["EleutherAI/pythia-14m", "allenai/OLMo-2-1124-7B"]


def test_olmo2_stages_do_not_collide(monkeypatch):
    fake_hub(monkeypatch, {"allenai/OLMo-2-1124-7B": OLMO2})
    found = list_checkpoints("allenai/OLMo-2-1124-7B")
    assert [(c.stage, c.ingredient, c.step) for c in found] == [
        (1, None, 1000), (1, None, 928646), (2, 1, 1000), (2, 1, 11931), (2, 2, 1000)]  # training order
    assert [c.tokens_billion for c in found] == [5, 3896, 5, 50, 5]
    assert [c.name for c in list_checkpoints("allenai/OLMo-2-1124-7B", stage=1)] == [
        "stage1-step1000-tokens5B", "stage1-step928646-tokens3896B"]
    with pytest.raises(UserError, match="3 checkpoints at step 1000.*stage"):
        resolve_checkpoint("allenai/OLMo-2-1124-7B", 1000)
    with pytest.raises(UserError, match="2 checkpoints at step 1000"):
        resolve_checkpoint("allenai/OLMo-2-1124-7B", 1000, stage=2)
    assert resolve_checkpoint("allenai/OLMo-2-1124-7B", 1000, stage=1).commit == "11" * 20
    assert resolve_checkpoint("allenai/OLMo-2-1124-7B", 1000, stage=2, ingredient=2).commit == "22" * 20
    assert resolve_checkpoint("allenai/OLMo-2-1124-7B", 11931).name == "stage2-ingredient1-step11931-tokens50B"
    with pytest.raises(UserError, match="no checkpoint at step 11931 in stage 1"):
        resolve_checkpoint("allenai/OLMo-2-1124-7B", 11931, stage=1)


def test_offline_lists_the_local_cache_without_calling_the_hub(monkeypatch):
    import huggingface_hub
    calls = fake_hub(monkeypatch, {}, error=AssertionError("the hub must not be asked offline"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = {"allenai/OLMo-1B-hf": [("main", "c" * 40), ("step20000-tokens84B", "d" * 40)],
              "allenai/OLMo-7B-hf": [("step1000-tokens4B", "e" * 40)]}
    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", lambda *a, **k: fake_cache(cached))
    found = list_checkpoints("allenai/OLMo-1B-hf")
    assert [(c.step, c.commit, c.tokens_billion) for c in found] == [(20000, "d" * 40, 84)]
    assert resolve_checkpoint("allenai/OLMo-1B-hf", 20000).revision == "step20000-tokens84B"
    with pytest.raises(UserError, match=r"allenai/OLMo-1B-hf step 738020 is not in the local Hugging Face cache.*"
                                        r"HF_HUB_OFFLINE.*20000"):
        resolve_checkpoint("allenai/OLMo-1B-hf", 738020)
    with pytest.raises(UserError, match="allenai/pythia-1b.*network"):
        list_checkpoints("allenai/pythia-1b")
    assert calls == []


def test_unreachable_hub_falls_back_to_the_cache(monkeypatch):
    import huggingface_hub
    calls = fake_hub(monkeypatch, {}, error=ConnectionError("no route to host"))
    monkeypatch.setattr(huggingface_hub, "scan_cache_dir",
                        lambda *a, **k: fake_cache({"EleutherAI/pythia-14m": [("step100", "f" * 40)]}))
    assert [c.step for c in list_checkpoints("EleutherAI/pythia-14m")] == [100]
    with pytest.raises(UserError, match="step 7 is not in the local Hugging Face cache and the hub is unreachable"):
        resolve_checkpoint("EleutherAI/pythia-14m", 7)
    assert calls == ["EleutherAI/pythia-14m"]  # not retried for every step


def test_missing_repo_is_a_user_error(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError
    missing = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    fake_hub(monkeypatch, {}, error=missing)
    with pytest.raises(UserError, match="no model allenai/No-Such-Model"):
        list_checkpoints("allenai/No-Such-Model")


def test_provenance_offline_reads_the_commit_from_cached_refs(monkeypatch):
    import huggingface_hub
    calls = fake_hub(monkeypatch, {}, error=AssertionError("no hub call offline"))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda *a, **k: pytest.fail("no model_info call"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = {"allenai/OLMo-2-1124-7B": [("main", "a" * 40), ("stage2-ingredient2-step1000-tokens5B", "22" * 20)]}
    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", lambda *a, **k: fake_cache(cached))
    started = time.perf_counter()
    info = provenance("allenai/OLMo-2-1124-7B", "stage2-ingredient2-step1000-tokens5B", False, "float32", "cpu")
    assert time.perf_counter() - started < 5
    assert (info["commit"], info["step"], info["stage"], info["ingredient"]) == ("22" * 20, 1000, 2, 2)
    assert provenance("allenai/OLMo-2-1124-7B", None, False, "float32", "cpu")["commit"] == "a" * 40
    assert provenance("allenai/OLMo-2-1124-7B", "9" * 40, False, "float32", "cpu")["commit"] == "9" * 40
    assert provenance("allenai/Not-Cached", "step5", False, "float32", "cpu")["commit"] is None
    assert calls == []


def test_provenance_online_uses_the_same_single_listing(monkeypatch):
    calls = fake_hub(monkeypatch, {"allenai/OLMo-2-1124-7B": OLMO2})
    checkpoint = resolve_checkpoint("allenai/OLMo-2-1124-7B", 928646)
    info = provenance(checkpoint.path, checkpoint.revision, False, "bfloat16", "cuda")
    assert info["commit"] == "12" * 20 and info["step"] == 928646 and info["stage"] == 1
    assert calls == ["allenai/OLMo-2-1124-7B"]


@pytest.mark.parametrize("family", ["opt", "gptj", "phi3", "falcon", "gpt2"])
def test_knowledge_entropy_of_other_layouts_equals_a_hook_on_the_hand_path(family, tokenizer_dir):
    """ke.entropy.measure on families whose FFN the old name table did not know (OPT's FFN sits on the decoder
    layer and flattens tokens, GPT-J's fc_in/fc_out, Phi-3's fused gate_up): its C-bar equals mean |input of the
    output projection| collected one document at a time by a hook on the hand-written module path."""
    from transformers import AutoTokenizer

    from conftest import make_texts
    from ke.entropy import EntropySettings, measure

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build(family, {"vocab_size": len(tokenizer)})
    docs = make_texts(5, seed=1)
    result = measure(model, tokenizer, docs, EntropySettings(seq_len=24, batch_size=3), progress=False)
    down = FAMILIES[family][1]
    per_doc = []
    for doc in docs:
        captured = []
        handles = [block.get_submodule(down).register_forward_pre_hook(lambda m, a: captured.append(a[0]))
                   for block in blocks_of(model)]
        ids = tokenizer(doc, truncation=True, max_length=24, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            model(input_ids=ids)
        for h in handles:
            h.remove()
        per_doc.append(torch.stack([c.reshape(-1, c.shape[-1]).abs().mean(0) for c in captured]))
    torch.testing.assert_close(result.mean_abs_coefficients, torch.stack(per_doc).mean(0), rtol=1e-4, atol=1e-6)
