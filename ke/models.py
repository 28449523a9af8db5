"""Loading checkpoints (local folder or hub id + revision), listing them, and finding each layer's FFN."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STEP_BRANCH = re.compile(r"^step(\d+)(?:-tokens(\d+)B)?$")  # OLMo/Pythia branch names, e.g. step738020-tokens3094B

# (output projection, input projection, gate) attribute names tried on each layer's MLP module, in order.
# The input of the output projection is the memory-coefficient vector C of Eq. 1.
FFN_LAYOUTS = [
    ("down_proj", "up_proj", "gate_proj"),    # OLMo, OLMo-2, Llama, Qwen2, Mistral, Gemma, ... (SwiGLU / GeGLU)
    ("dense_4h_to_h", "dense_h_to_4h", None),  # GPT-NeoX (Pythia)
    ("c_proj", "c_fc", None),                  # GPT-2 (Conv1D: weights stored transposed)
    ("fc2", "fc1", None),                      # Phi, ...
]
MLP_NAMES = ("mlp", "feed_forward", "ffn")
ATTENTION_NAMES = ("self_attn", "attention", "attn")


@dataclass
class FFNLayer:
    """One decoder layer's feed-forward block, seen as key-value memory (Eq. 1)."""

    index: int
    mlp: nn.Module
    down: nn.Module  # V: its input is the memory coefficient vector C
    up: nn.Module  # K: the rows that Algorithm 1 scales
    gate: nn.Module | None  # gate of a gated FFN (SwiGLU), None for GELU FFNs

    @property
    def ffn_dim(self) -> int:
        return self.up_rows()[0].shape[0]

    def up_rows(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Views of the up projection whose row i belongs to FFN slot i (GPT-2's Conv1D stores the transpose)."""
        weight = self.up.weight.data
        if type(self.up).__name__ == "Conv1D":
            weight = weight.t()
        bias = self.up.bias.data if getattr(self.up, "bias", None) is not None else None
        return weight, bias


@dataclass
class Checkpoint:
    step: int
    name: str  # "step1500" or the hub branch name
    path: str  # local folder or hub id
    revision: str | None = None  # hub branch, None for local folders
    commit: str | None = None
    tokens_billion: int | None = None


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: object
    provenance: dict


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder blocks: the first ModuleList whose blocks hold an MLP-like child."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and any(
                hasattr(module[0], name) for name in MLP_NAMES):
            return module
    raise UserError(f"{type(model).__name__} has no recognisable decoder layers with an FFN block; "
                    "ke supports decoder-only transformers such as OLMo, Llama, Qwen2, Mistral, GPT-NeoX and GPT-2.")


def find_ffn_layers(model: nn.Module) -> list[FFNLayer]:
    """Each decoder layer's FFN, found by structure (attribute names), not by model class."""
    layers = []
    for index, block in enumerate(decoder_layers(model)):
        mlp = next(getattr(block, name) for name in MLP_NAMES if hasattr(block, name))
        if hasattr(mlp, "experts") or hasattr(mlp, "router") or hasattr(mlp, "gate") and not hasattr(mlp, "gate_proj"):
            raise UserError(f"{type(model).__name__} uses a mixture-of-experts FFN in layer {index}; knowledge "
                            "entropy is defined for dense FFNs, so use a dense model.")
        for down, up, gate in FFN_LAYOUTS:
            if hasattr(mlp, down) and hasattr(mlp, up):
                layers.append(FFNLayer(index, mlp, getattr(mlp, down), getattr(mlp, up),
                                       getattr(mlp, gate) if gate and hasattr(mlp, gate) else None))
                break
        else:
            raise UserError(f"{type(model).__name__}'s FFN ({type(mlp).__name__}) has no known output projection; "
                            "add its attribute names to ke.models.FFN_LAYOUTS.")
    return layers


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Each decoder layer's self-attention module."""
    return [next(getattr(block, n) for n in ATTENTION_NAMES if hasattr(block, n)) for block in decoder_layers(model)]


def quiet_transformers() -> None:
    """No per-load progress bars or warnings from transformers (for the CLI and the book's pages)."""
    from transformers.utils import logging
    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def parse_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}; got {dtype!r}.")
    return DTYPES[dtype]


def parse_device(device: str) -> torch.device:
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N.") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device} asks for a GPU but torch sees none; use --device cpu.")
    return parsed


def load_model(source: str, revision: str | None = None, *, dtype: str = "float32", device: str = "cpu",
               attn_implementation: str | None = None) -> Loaded:
    """Load a causal LM and its tokenizer from a local folder or a hub id (+ branch/tag/commit `revision`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype, torch_device = parse_dtype(dtype), parse_device(device)
    local = _is_local(source)
    if local:
        folder = Path(source).expanduser()
        if not (folder / "config.json").exists():
            raise UserError(f"model folder {source} does not exist or holds no config.json; "
                            "pass a folder written by save_pretrained or a hub id such as allenai/OLMo-1B-hf.")
    if local and revision:
        raise UserError(f"--revision {revision} applies to hub ids, but {source} is a local folder; pass the "
                        "checkpoint folder itself (list them with `ke checkpoints`).")
    kwargs = {"revision": revision} if revision and not local else {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **{k: v for k, v in kwargs.items() if k == "revision"})
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as error:
        where = f"{source}@{revision}" if revision else source
        hint = "check the revision with `ke checkpoints`" if revision else "check the id and your network"
        raise UserError(f"could not load model {where} ({str(error).splitlines()[0][:160]}); {hint}.") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch_device).eval()
    return Loaded(model, tokenizer, provenance(source, revision, local, dtype, str(torch_device)))


def provenance(source: str, revision: str | None, local: bool, dtype: str, device: str) -> dict:
    """Where the weights came from: the resolved hub commit, or the local training step."""
    info = {"model": source, "revision": revision, "commit": None, "step": None, "dtype": dtype, "device": device}
    if local:
        meta = Path(source).expanduser() / "ke_checkpoint.json"
        if meta.exists():
            info["step"] = json.loads(meta.read_text()).get("step")
        return info
    match = STEP_BRANCH.match(revision or "")
    info["step"] = int(match.group(1)) if match else None
    try:
        from huggingface_hub import HfApi
        info["commit"] = HfApi().model_info(source, revision=revision).sha
    except Exception:  # offline use from the local cache: the commit stays unknown
        pass
    return info


def list_checkpoints(source: str) -> list[Checkpoint]:
    """Checkpoints of a local training run (folders stepN/) or of a hub repo (branches stepN[-tokensXB]), by step."""
    if _is_local(source):
        root = Path(source).expanduser()
        if not root.is_dir():
            raise UserError(f"run folder {source} does not exist; pass a folder of stepN/ checkpoints or a hub id.")
        found = [Checkpoint(int(m.group(1)), d.name, str(d))
                 for d in root.iterdir() if (m := STEP_BRANCH.match(d.name)) and (d / "config.json").exists()]
        if not found and (root / "config.json").exists():
            return [Checkpoint(-1, root.name, str(root))]
        if not found:
            raise UserError(f"run folder {source} holds no stepN/ checkpoints; train one with `ke pretrain`.")
        return sorted(found, key=lambda c: c.step)
    from huggingface_hub import list_repo_refs
    try:
        refs = list_repo_refs(source)
    except Exception as error:
        raise UserError(f"could not list the branches of {source} ({type(error).__name__}); "
                        "check the hub id and your network.") from None
    found = []
    for branch in refs.branches:
        if m := STEP_BRANCH.match(branch.name):
            found.append(Checkpoint(int(m.group(1)), branch.name, source, branch.name, branch.target_commit,
                                    int(m.group(2)) if m.group(2) else None))
    return sorted(found, key=lambda c: c.step)


def resolve_checkpoint(source: str, step: int) -> Checkpoint:
    """The checkpoint of `source` at training step `step` (never builds a branch name from the step)."""
    for checkpoint in list_checkpoints(source):
        if checkpoint.step == step:
            return checkpoint
    raise UserError(f"{source} has no checkpoint at step {step}; list them with `ke checkpoints {source}`.")
