"""Resuscitation (Algorithm 1) against its closed form, and the attention temperature against softmax(z / T)."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from conftest import make_texts
from ke.entropy import EntropySettings, measure
from ke.errors import UserError
from ke.models import attention_modules, find_ffn_layers, load_model
from ke.resuscitate import resuscitate, resuscitate_checkpoint, set_attention_temperature, temperature_at

SETTINGS = EntropySettings(seq_len=32, batch_size=4)
DOCS = make_texts(16, seed=3)


def hand_quantile(values: torch.Tensor, q: float) -> float:
    """Linear-interpolation quantile from the sorted values (numpy's default 'linear' method)."""
    s = sorted(values.tolist())
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def cbar(model, tokenizer):
    return measure(model, tokenizer, DOCS, SETTINGS, progress=False).mean_abs_coefficients.double()


@pytest.fixture(scope="module")
def olmo(tiny_models):
    return load_model(str(tiny_models("olmo")))


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_gated_closed_form_layer_by_layer(olmo, ratio):
    factor = 2.0
    before = cbar(olmo.model, olmo.tokenizer)
    num_layers = before.shape[0]
    for layer in (0, num_layers - 1):
        model = copy.deepcopy(olmo.model)
        report = resuscitate(model, before.float(), ratio, factor, layers=[layer])
        after = cbar(model, olmo.tokenizer)
        c = before[layer]
        threshold = hand_quantile(c, ratio)
        selected = c <= threshold
        assert report["threshold"] == pytest.approx([threshold], rel=1e-6)
        assert report["selected"] == [int(selected.sum())] and 0 < selected.sum() < len(c)
        torch.testing.assert_close(after[layer][selected], torch.full_like(c[selected], factor * float(c.mean())),
                                   rtol=1e-4, atol=0)
        torch.testing.assert_close(after[layer][~selected], c[~selected], rtol=1e-5, atol=0)
        torch.testing.assert_close(after[:layer], before[:layer], rtol=0, atol=0)  # earlier layers untouched
        ffn_old, ffn_new = find_ffn_layers(olmo.model)[layer], find_ffn_layers(model)[layer]
        assert torch.equal(ffn_old.gate.weight, ffn_new.gate.weight)
        assert torch.equal(ffn_old.down.weight, ffn_new.down.weight)


def spiky(model, sigma: float = 1.0):
    """A copy whose slots have log-normally spread activity, like a trained low-entropy model (random init is flat)."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for ffn in find_ffn_layers(model):
            weight = ffn.up_rows()[0]
            weight *= torch.exp(sigma * torch.randn(weight.shape[0], 1, generator=generator))
    return model


@pytest.mark.parametrize("factor, aged", [(1.0, False), (1.0, True), (2.0, True), (3.0, True)])
def test_resuscitation_raises_knowledge_entropy(olmo, factor, aged):
    # On a near-uniform C-bar (random init), q > 1 can overshoot: the raised slots become the largest ones.
    original = spiky(olmo.model) if aged else olmo.model
    before = measure(original, olmo.tokenizer, DOCS, SETTINGS, progress=False)
    model = copy.deepcopy(original)
    resuscitate(model, before.mean_abs_coefficients, 0.5, factor)
    after = measure(model, olmo.tokenizer, DOCS, SETTINGS, progress=False)
    assert after.knowledge_entropy > before.knowledge_entropy
    assert all(a > b for a, b in zip(after.layer_entropy, before.layer_entropy))


def test_zero_coefficients_are_skipped_and_counted(olmo):
    model = copy.deepcopy(olmo.model)
    coefficients = cbar(model, olmo.tokenizer).float()
    coefficients[0, 5] = 0.0
    row5 = find_ffn_layers(model)[0].up_rows()[0][5].clone()
    report = resuscitate(model, coefficients, 0.5, 2.0)
    weight = find_ffn_layers(model)[0].up_rows()[0]
    assert torch.isfinite(weight).all()
    assert torch.equal(weight[5], row5)
    assert report["zero_skipped"] == [1, 0]
    assert report["selected"][0] == int((coefficients[0] <= hand_quantile(coefficients[0], 0.5)).sum())


@pytest.mark.parametrize("arch", ["gpt_neox", "gpt2"])
def test_non_gated_pre_activation_scales(tiny_models, arch):
    loaded = load_model(str(tiny_models(arch)))
    torch.manual_seed(0)
    for ffn in find_ffn_layers(loaded.model):  # random init has zero biases, which would hide a missed bias
        ffn.up_rows()[1].normal_(0, 0.5)
    before = cbar(loaded.model, loaded.tokenizer)
    ids = loaded.tokenizer(DOCS[:4], return_tensors="pt", padding=True)

    def pre_activations(model, layer):
        captured = []
        handle = find_ffn_layers(model)[layer].up.register_forward_hook(lambda m, a, out: captured.append(out))
        with torch.no_grad():
            model(**ids)
        handle.remove()
        return captured[0]

    for layer in (0, before.shape[0] - 1):
        model = copy.deepcopy(loaded.model)
        resuscitate(model, before.float(), 0.5, 2.0, layers=[layer])
        old, new = pre_activations(loaded.model, layer), pre_activations(model, layer)
        c = before[layer]
        selected = c <= hand_quantile(c, 0.5)
        u = torch.where(selected, 2.0 * c.mean() / c, torch.ones_like(c)).float()
        torch.testing.assert_close(new, old * u, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(new[..., ~selected], old[..., ~selected], rtol=0, atol=0)


def attention_probs_rerun(model, ids, temperature):
    """Attention weights of every layer at `temperature`, and the same layers re-run at T=1 on identical inputs."""
    calls = []
    handles = [m.register_forward_hook(lambda m, a, kw, out: calls.append((m, a, kw, out[1])), with_kwargs=True)
               for m in attention_modules(model)]
    set_attention_temperature(model, temperature)
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)  # a cache would make the re-run attend to its own keys twice
    for handle in handles:
        handle.remove()
    set_attention_temperature(model, 1.0)
    with torch.no_grad():
        return [(probs, module(*args, **kwargs)[1]) for module, args, kwargs, probs in calls]


@pytest.mark.parametrize("arch", ["olmo", "gpt_neox", "gpt2"])
def test_attention_temperature_is_softmax_of_logits_over_t(tiny_models, arch):
    loaded = load_model(str(tiny_models(arch)), attn_implementation="eager")
    ids = torch.randint(3, len(loaded.tokenizer), (2, 12), generator=torch.Generator().manual_seed(0))
    temperature = 2.5
    for hot, cold in attention_probs_rerun(loaded.model, ids, temperature):
        # softmax(z / T) = p**(1/T) / sum p**(1/T) with p = softmax(z); masked entries stay 0
        expected = cold.double() ** (1 / temperature)
        expected = expected / expected.sum(-1, keepdim=True)
        torch.testing.assert_close(hot.double(), expected, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(hot, cold, atol=1e-3)


def test_temperature_restores_bit_for_bit_and_matches_sdpa(tiny_models):
    path = str(tiny_models("olmo"))
    eager, sdpa = load_model(path, attn_implementation="eager").model, load_model(path, attn_implementation="sdpa").model
    ids = torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        original = eager(input_ids=ids).logits
        set_attention_temperature(eager, 2.0)
        set_attention_temperature(eager, 2.0)  # idempotent: not 4.0
        hot = eager(input_ids=ids).logits
        set_attention_temperature(sdpa, 2.0)
        torch.testing.assert_close(sdpa(input_ids=ids).logits, hot, rtol=1e-4, atol=1e-5)  # second code path
        set_attention_temperature(eager, 4.0)
        hotter = eager(input_ids=ids).logits
        set_attention_temperature(eager, 1.0)
        assert torch.equal(eager(input_ids=ids).logits, original)
    assert not torch.allclose(hot, original, atol=1e-4) and not torch.allclose(hot, hotter, atol=1e-4)


def test_temperature_errors_and_schedule(olmo):
    model = copy.deepcopy(olmo.model)
    with pytest.raises(UserError, match="temperature"):
        set_attention_temperature(model, 0.0)
    del attention_modules(model)[1].scaling
    with pytest.raises(UserError, match="scaling"):
        set_attention_temperature(model, 2.0)
    assert temperature_at(0, 100, 2.5) == 2.5
    assert temperature_at(100, 100, 2.5) == 1.0
    assert temperature_at(50, 100, 3.0) == pytest.approx(2.0)
    assert temperature_at(150, 100, 3.0) == 1.0
    assert temperature_at(0, 100, 3.0, decay=False) == temperature_at(100, 100, 3.0, decay=False) == 3.0


def test_resuscitate_checkpoint_writes_predicted_rows_and_caches(tiny_models, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(tiny_models("olmo"), source)
    (source / "ke_checkpoint.json").write_text(json.dumps({"step": 7}))
    original = load_model(str(source))
    coefficients = cbar(original.model, original.tokenizer).float()
    coefficients_file = tmp_path / "coefficients.safetensors"
    save_file({"mean_abs_coefficients": coefficients}, str(coefficients_file))

    out = resuscitate_checkpoint(str(source), coefficients_file, 0.5, 2.0, tmp_path / "out")
    changed = load_model(str(out))
    assert changed.provenance["step"] == 7
    for old, new, c in zip(find_ffn_layers(original.model), find_ffn_layers(changed.model), coefficients.double()):
        selected = c <= hand_quantile(c, 0.5)
        u = torch.where(selected, 2.0 * c.mean() / c, torch.ones_like(c)).float()
        torch.testing.assert_close(new.up_rows()[0], old.up_rows()[0] * u[:, None], rtol=1e-6, atol=0)
        assert torch.equal(new.up_rows()[0][~selected], old.up_rows()[0][~selected])
        assert torch.equal(new.gate.weight, old.gate.weight) and torch.equal(new.down.weight, old.down.weight)
    record = json.loads((out / "ke_resuscitation.json").read_text())
    assert record["recipe"]["ratio"] == 0.5 and record["recipe"]["factor"] == 2.0
    assert record["provenance"]["source"] == str(source) and "ke_version" in record["provenance"]

    weights = out / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert resuscitate_checkpoint(str(source), coefficients_file, 0.5, 2.0, out) == out
    assert weights.stat().st_mtime_ns == stamp  # cached
    resuscitate_checkpoint(str(source), coefficients_file, 0.5, 1.0, out)
    assert json.loads((out / "ke_resuscitation.json").read_text())["recipe"]["factor"] == 1.0


def test_cli(tiny_models, tmp_path, capsys):
    from ke.cli import main
    from ke.entropy import run_entropy
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS))
    run_entropy(str(tiny_models("gpt_neox")), str(data), tmp_path / "entropy", settings=SETTINGS, progress=False)
    args = ["resuscitate", str(tiny_models("gpt_neox")), "--coefficients", str(tmp_path / "entropy"), "--factor", "2",
            "--out", str(tmp_path / "out")]
    assert main(args + ["--ratio", "0.5"]) == 0
    assert (tmp_path / "out" / "ke_resuscitation.json").exists()
    assert main(args + ["--ratio", "50"]) == 2
    assert "--ratio" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, name", [
    ({"ratio": 0.0}, "ratio"), ({"ratio": 1.5}, "ratio"), ({"ratio": 50}, "ratio"),
    ({"factor": 0.0}, "factor"), ({"factor": -1.0}, "factor"), ({"shape": (3, 48)}, "coefficients"),
    ({"shape": (2, 47)}, "coefficients"), ({"layers": [2]}, "layers")])
def test_bad_arguments(olmo, kwargs, name):
    args = {"ratio": 0.5, "factor": 2.0, "shape": (2, 48), "layers": None, **kwargs}
    model = copy.deepcopy(olmo.model)
    with pytest.raises(UserError, match=name) as error:
        resuscitate(model, torch.ones(args["shape"]), args["ratio"], args["factor"], layers=args["layers"])
    assert str(error.value).count(".") >= 1 and "\n" not in str(error.value)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), olmo.model.parameters()))  # nothing changed
