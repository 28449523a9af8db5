"""Resuscitation: raise inactive memory coefficients (Algorithm 1) or flatten attention (App. B.8 temperature).

FFN resuscitation (Algorithm 1, official `change_parameters.py`): per layer, the slots whose mean |coefficient|
C-bar is at most the p-quantile get their up-projection row scaled by u_i = q * mean(C-bar) / C-bar_i.

Attention temperature: every attention logit is divided by T before the softmax. transformers' attention modules
(Olmo, Olmo2, Llama, Qwen2, Qwen3, Mistral, GPTNeoX, GPT2 in transformers 5.x) keep the logit scale
1/sqrt(head_dim) in an attribute `scaling` that they pass to the attention function (eager, sdpa, flash, flex)
at every call, so setting `scaling = base / T` changes the logits and nothing else, without copying or forking
model code. Scaling q_proj instead would not work in general: OLMo-2 and Qwen3 normalise q after the projection
(which undoes the scale), and GPT-NeoX fuses q, k and v in one matrix.
"""
from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .errors import UserError
from .models import CHECKPOINT_MARKER, attention_modules, find_ffn_layers, load_model
from .storage import files_in, fingerprint, read_cached, write_cached

RECIPE_FILE = "ke_resuscitation.json"  # vouches for the checkpoint's files; written last
VERSION = 1  # of a resuscitated checkpoint's meaning: bump it to recompute every cached one (see ke.storage)


def check_recipe(ratio: float, factor: float) -> None:
    if not 0 < ratio <= 1:  # also false for NaN
        hint = f"for {ratio:g}% pass {ratio / 100:g}" if 1 < ratio <= 100 else "e.g. 0.5 for the lowest 50%"
        raise UserError(f"--ratio must be a fraction in (0, 1], not a percentage ({hint}); got {ratio}.")
    if not (factor > 0 and math.isfinite(factor)):
        raise UserError(f"--factor must be a positive number such as 2 (q of Algorithm 1); got {factor}.")


@torch.no_grad()
def resuscitate(model: nn.Module, coefficients: torch.Tensor, ratio: float, factor: float,
                layers: list[int] | None = None) -> dict:
    """Algorithm 1, in place: scale the up-projection rows of each layer's lowest-`ratio` memory slots.

    coefficients: C-bar [layers, ffn_dim] (mean |coefficient| measured by `ke.entropy.measure`).
    Gated FFNs (SwiGLU): only row i of up_proj (and its bias, if any) is scaled, so the coefficient
    silu(gate(x)) * up(x) of slot i scales by exactly u_i and its mean |coefficient| becomes factor * mean(C-bar).
    Non-gated FFNs (GPT-NeoX, GPT-2): the input projection's row and bias are scaled, so the pre-activation
    scales by u_i; the coefficient GELU(pre-activation) then does NOT scale linearly.
    Slots with C-bar == 0 would need an infinite multiplier: they are left alone and counted (`zero_skipped`).
    Returns the recipe and, per changed layer, the number of selected slots, the threshold and the mean multiplier.
    """
    check_recipe(ratio, factor)
    ffn = find_ffn_layers(model)
    coefficients = torch.as_tensor(coefficients).detach().cpu()
    expected = (len(ffn), ffn[0].ffn_dim)
    if tuple(coefficients.shape) != expected:
        raise UserError(f"coefficients must have shape [layers, ffn_dim] = {list(expected)} to match the model; got "
                        f"{list(coefficients.shape)}: pass the coefficients.safetensors measured on this model.")
    if not (torch.isfinite(coefficients).all() and (coefficients >= 0).all()):
        raise UserError("coefficients must be finite and non-negative (mean |coefficient|); "
                        "pass the mean_abs_coefficients written by `ke entropy`.")
    chosen = list(range(len(ffn))) if layers is None else list(layers)
    if not chosen or any(not isinstance(l, int) or not 0 <= l < len(ffn) for l in chosen):
        raise UserError(f"layers must be a non-empty list of layer indices in 0..{len(ffn) - 1}; got {layers}.")

    report = {"ratio": ratio, "factor": factor, "gated": ffn[0].gate is not None, "layers": chosen,
              "selected": [], "zero_skipped": [], "threshold": [], "mean_multiplier": []}
    for l in chosen:
        c = coefficients[l].double()
        threshold, selected, scaled = select_slots(c, ratio)
        multiplier = factor * c.mean() / c.where(scaled, torch.ones_like(c))  # only read where `scaled`
        weight, bias = ffn[l].up_rows()
        u = multiplier[scaled].to(weight.dtype).to(weight.device)
        idx = scaled.nonzero()[:, 0].to(weight.device)
        weight[idx] *= u[:, None]
        if bias is not None:
            bias[idx] *= u
        report["selected"].append(int(selected.sum()))
        report["zero_skipped"].append(int((selected & ~scaled).sum()))
        report["threshold"].append(float(threshold))
        report["mean_multiplier"].append(float(multiplier[scaled].mean()) if scaled.any() else 1.0)
    return report


def select_slots(coefficients: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1's choice of slots in C-bar [..., ffn_dim], per layer (the last dimension): the threshold (the
    ratio-quantile, linear interpolation as the official code), the selected slots (at or below it) and the scaled
    ones (selected and above zero: a slot never used has nothing to multiply)."""
    c = torch.as_tensor(coefficients).double()
    threshold = torch.quantile(c, ratio, dim=-1, keepdim=True)
    selected = c <= threshold
    return threshold, selected, selected & (c > 0)


def _load_coefficient_file(path) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "coefficients.safetensors"
    if not path.is_file():
        raise UserError(f"--coefficients file {path} does not exist; pass the coefficients.safetensors "
                        "written by `ke entropy` (or its folder).")
    try:
        tensors = load_file(str(path))
    except SafetensorError:
        raise UserError(f"--coefficients file {path} is not a safetensors file; pass the one written by "
                        "`ke entropy`.") from None
    if "mean_abs_coefficients" not in tensors:
        raise UserError(f"--coefficients file {path} holds no 'mean_abs_coefficients'; pass the "
                        "coefficients.safetensors written by `ke entropy`.")
    return tensors["mean_abs_coefficients"]


def resuscitate_checkpoint(source: str, coefficients_file, ratio: float, factor: float, out_dir,
                           revision: str | None = None, dtype: str = "float32") -> Path:
    """Load `source`, apply Algorithm 1 to all layers, save a normal checkpoint to out_dir.

    out_dir gets the model and tokenizer (`save_pretrained`), `ke_checkpoint.json` copied from a local source
    (so the training step stays known) and `ke_resuscitation.json` (recipe, report, provenance), written last.
    Cached: if out_dir already holds the same recipe, nothing is recomputed.
    """
    check_recipe(ratio, factor)
    out_dir = Path(out_dir).expanduser()
    source_dir = Path(source).expanduser()
    if source_dir.exists() and source_dir.resolve() == out_dir.resolve():
        raise UserError(f"--out {out_dir} is the source checkpoint itself; pass a new folder.")
    coefficients_path = Path(coefficients_file).expanduser()
    coefficients = _load_coefficient_file(coefficients_path)
    coefficients_path = coefficients_path / "coefficients.safetensors" if coefficients_path.is_dir() \
        else coefficients_path
    key = {"version": VERSION, "model": source, "model_files": fingerprint(source), "revision": revision,
           "dtype": dtype, "ratio": ratio, "factor": factor,
           "coefficients_sha256": hashlib.sha256(coefficients_path.read_bytes()).hexdigest()}
    recipe_file = out_dir / RECIPE_FILE
    if read_cached(recipe_file, key) is not None:
        return out_dir

    loaded = load_model(source, revision, dtype=dtype)
    report = resuscitate(loaded.model, coefficients, ratio, factor)
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe_file.unlink(missing_ok=True)  # a folder without the recipe file is an unfinished one
    loaded.model.save_pretrained(out_dir)
    loaded.tokenizer.save_pretrained(out_dir)
    if (source_dir / CHECKPOINT_MARKER).is_file():
        shutil.copyfile(source_dir / CHECKPOINT_MARKER, out_dir / CHECKPOINT_MARKER)
    record = {"recipe": report, "provenance": {**loaded.provenance, "source": source,
                                               "coefficients": str(coefficients_path), "ke_version": __version__}}
    # last, vouching for the files above: a folder without it is an unfinished one
    write_cached(record, recipe_file, key, files=files_in(out_dir, RECIPE_FILE))
    return out_dir


def set_attention_temperature(model: nn.Module, temperature: float) -> None:
    """Divide every attention logit by `temperature` before the softmax (App. B.8); idempotent, T=1 restores."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise UserError(f"temperature must be a positive number such as 2.0; got {temperature}.")
    if getattr(model.config, "attn_logit_softcapping", None):
        raise UserError(f"{type(model).__name__} soft-caps its attention logits, so scaling them is not a "
                        "temperature; use a model without attn_logit_softcapping.")
    for module in attention_modules(model):
        if not isinstance(getattr(module, "scaling", None), (int, float)):
            raise UserError(f"{type(module).__name__} has no numeric `scaling` attribute to set the attention "
                            "temperature through; use a model whose attention keeps its logit scale in `scaling`.")
        if not hasattr(module, "_ke_base_scaling"):
            module._ke_base_scaling = module.scaling
        module.scaling = module._ke_base_scaling if temperature == 1 else module._ke_base_scaling / temperature


def temperature_at(step: int, total_steps: int, t0: float, decay: bool = True) -> float:
    """Attention temperature at `step`: linear from t0 at step 0 to 1.0 at total_steps (official default), or t0."""
    if total_steps <= 0:
        raise UserError(f"total_steps must be a positive integer; got {total_steps}.")
    if not decay:
        return float(t0)
    fraction = min(max(step / total_steps, 0.0), 1.0)
    return float(t0 - (t0 - 1.0) * fraction)
