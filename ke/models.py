"""Loading checkpoints (local folder or hub id + revision), listing them, and finding each layer's FFN.

The FFN of a decoder block is found from the module graph, not from attribute names: one short forward pass
records the inputs and outputs of every linear layer in the decoder blocks, and the FFN's output projection is
the linear whose input is, numerically, an elementwise activation of other linears' outputs in the same block:
act(up(x)) (GELU/ReLU FFNs), act(gate(x)) * up(x) (gated FFNs), or act(h1) * h2 for the two halves h1, h2 of a
fused gate_up projection. That input is the memory-coefficient vector C of Eq. 1.
"""
from __future__ import annotations

import json
import os
import re
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHECKPOINT_MARKER = "ke_checkpoint.json"  # in a checkpoint trained by ke.miniature.pretrain: its step, loss, regime
STEP_BRANCH = re.compile(r"^step(\d+)(?:-tokens(\d+)B)?$")  # OLMo/Pythia branch names, e.g. step738020-tokens3094B
# Hub checkpoint branches: stepN[-tokensXB] (OLMo, Pythia) and OLMo-2's stage1-stepN-tokensXB (pretraining) and
# stage2-ingredientK-stepN-tokensXB (mid-training: each ingredient restarts from the final stage-1 weights).
CHECKPOINT_BRANCH = re.compile(
    r"^(?:stage(?P<stage>\d+)-(?:ingredient(?P<ingredient>\d+)-)?)?step(?P<step>\d+)(?:-tokens(?P<tokens>\d+)B)?$")
ATTENTION_NAMES = ("self_attn", "attention", "attn", "self_attention")
MOE_NAMES = re.compile(r"expert|router|moe", re.IGNORECASE)  # names of mixture-of-experts modules in a block
MOE_CLASSES = re.compile(r"expert|router|sparsemoe|moeblock", re.IGNORECASE)  # and their classes
# Elementwise activations tried between the projections (besides the block's own activation modules).
ACTIVATIONS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "sigmoid": torch.sigmoid,
}
ACTIVATION_CLASS = re.compile(r"act|gelu|silu|swish|relu|mish|sigmoid|glu", re.IGNORECASE)
PROBE_TOKENS = 8


@dataclass
class FFNLayer:
    """One decoder layer's feed-forward block, seen as key-value memory (Eq. 1)."""

    index: int
    mlp: nn.Module  # the smallest module holding both projections (the decoder block itself for OPT)
    down: nn.Module  # V: its input is the memory coefficient vector C
    up: nn.Module  # K: the rows that Algorithm 1 scales (for a fused gate_up projection: `up_part` of its rows)
    gate: nn.Module | None  # gate of a gated FFN (SwiGLU, GeGLU); `up` itself when fused; None for GELU FFNs
    fused: bool = False  # gate and up are two halves of one projection's output
    up_part: slice = field(default_factory=lambda: slice(None))  # rows of `up` (as [out, in]) of the up branch
    gate_part: slice | None = None  # rows of `gate` that produce the gate branch
    activation: str = ""  # the activation that related the recorded tensors, e.g. "silu" or "mlp.act_fn"

    @property
    def ffn_dim(self) -> int:
        return self.up_rows()[0].shape[0]

    def up_rows(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Views of the up projection whose row i (and bias i) belongs to FFN slot i: scaling them scales slot i's
        coefficient (gated, fused) or pre-activation (GELU FFNs) by the same factor."""
        weight = _rows(self.up)[self.up_part]
        bias = self.up.bias.data[self.up_part] if getattr(self.up, "bias", None) is not None else None
        return weight, bias


@dataclass
class Checkpoint:
    step: int  # training step within its stage (OLMo-2's stage-2 steps count from the start of stage 2)
    name: str  # "step1500" or the hub branch name
    path: str  # local folder or hub id
    revision: str | None = None  # hub branch, None for local folders
    commit: str | None = None
    tokens_billion: int | None = None  # tokens seen in this stage, as the branch name says
    stage: int | None = None  # OLMo-2: 1 = pretraining, 2 = mid-training; None for single-stage runs
    ingredient: int | None = None  # OLMo-2 stage 2: which data mix (each one starts from the final stage-1 model)


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: object
    provenance: dict


# ---------------------------------------------------------------- decoder blocks and their FFNs, by structure

def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _rows(module: nn.Module) -> torch.Tensor:
    """The weight as [out_features, in_features] (GPT-2's Conv1D stores the transpose)."""
    weight = module.weight.data
    return weight.t() if type(module).__name__ == "Conv1D" else weight


def _num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    n = getattr(config, "num_hidden_layers", None)
    return n if isinstance(n, int) else None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder blocks: a ModuleList of blocks that hold linear layers, as long as the config's
    num_hidden_layers (the longest such list when the config does not say)."""
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) and not _is_linear(m[0])
              and sum(_is_linear(x) for x in m[0].modules()) >= 2]
    n = _num_layers(model)
    exact = [m for m in stacks if len(m) == n]
    if exact or stacks:
        return exact[0] if exact else max(stacks, key=len)
    raise UserError(f"{type(model).__name__} has no stack of decoder blocks with linear layers; ke supports "
                    "decoder-only transformers such as OLMo, Llama, Qwen2, GPT-NeoX, GPT-2 and OPT.")


def _refuse_mixture_of_experts(model: nn.Module, blocks: nn.ModuleList) -> None:
    for index, block in enumerate(blocks):
        for name, module in block.named_modules():
            if name and (MOE_NAMES.search(name.rsplit(".", 1)[-1]) or MOE_CLASSES.search(type(module).__name__)):
                raise UserError(f"{type(model).__name__} is a mixture-of-experts model ({type(module).__name__} in "
                                f"layer {index} routes tokens among experts), but knowledge entropy is defined for "
                                "a dense FFN; pass a dense model such as OLMo, Llama or Pythia.")


@contextmanager
def hooks(forward=(), pre=()):
    """Register forward hooks (module, hook(module, args, output)) and forward pre-hooks (module, hook(module,
    args)) for the duration of a with-block; they are removed however the block ends."""
    handles = []
    try:
        handles += [module.register_forward_hook(hook) for module, hook in forward]
        handles += [module.register_forward_pre_hook(hook) for module, hook in pre]
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def _probe(model: nn.Module, blocks: nn.ModuleList) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """One forward pass of a few tokens; per block, each linear's first (input, output), as float32 [tokens, dim]."""
    records = [{} for _ in blocks]

    def recorder(store, name):
        def hook(module, args, output):
            if name not in store and args and torch.is_tensor(args[0]) and torch.is_tensor(output):
                store[name] = (args[0].detach().flatten(0, -2).float(), output.detach().flatten(0, -2).float())
        return hook

    recorders = [(module, recorder(records[i], name))
                 for i, block in enumerate(blocks) for name, module in block.named_modules() if _is_linear(module)]
    modes = {m: m.training for m in model.modules()}
    model.eval()  # no dropout between the recorded tensors
    embeddings = model.get_input_embeddings()
    generator = torch.Generator().manual_seed(0)  # the global RNG stays untouched
    ids = torch.randint(0, embeddings.num_embeddings, (1, PROBE_TOKENS), generator=generator)
    try:
        with hooks(forward=recorders):
            try:
                model(input_ids=ids.to(embeddings.weight.device), use_cache=False)
            except TypeError:  # a forward without `use_cache`
                model(input_ids=ids.to(embeddings.weight.device))
    except Exception as error:
        raise UserError(f"a {PROBE_TOKENS}-token forward pass of {type(model).__name__}, run to find its FFN layers, "
                        f"failed ({type(error).__name__}: {str(error)[:120]}); pass a causal language model that "
                        "accepts input_ids.") from None
    finally:
        for module, mode in modes.items():
            module.training = mode
    return records


def _activations(block: nn.Module) -> list[tuple[str, object]]:
    own = [(name, module) for name, module in block.named_modules()
           if name and not list(module.children()) and not _is_linear(module)
           and ACTIVATION_CLASS.search(type(module).__name__)]
    return own + list(ACTIVATIONS.items())


@dataclass(frozen=True)
class _Layout:
    """One block's FFN as module paths (relative to the block), so that a cached layout survives copies."""

    error: float  # |predicted C - C| / |C| on the probe
    down: str
    up: str
    gate: str | None
    up_part: slice
    gate_part: slice | None
    activation: str
    block: str = ""  # path of the block in the model


def _match_block(records: dict, activations: list, tolerance: float) -> list[_Layout]:
    """Per output projection `down` whose input is an activation of other linears' outputs within `tolerance`,
    the best-fitting relation."""
    found = []
    for down, (c, out) in records.items():
        m, scale = c.shape[-1], c.norm()
        if scale == 0:
            continue
        options = []  # (up, gate, up_part, gate_part, up output, gate output or None)
        for up, (x, h) in records.items():
            if up == down or x.shape[-1] != out.shape[-1]:  # the FFN maps the hidden width back to itself
                continue
            if h.shape[-1] == m:
                options.append((up, None, slice(None), None, h, None))
                options += [(up, gate, slice(None), slice(None), h, g) for gate, (_, g) in records.items()
                            if gate not in (up, down) and g.shape == h.shape]
            elif h.shape[-1] == 2 * m:  # fused gate_up: halves chunked or interleaved; either may be the gate
                first, second, even, odd = slice(0, m), slice(m, 2 * m), slice(0, None, 2), slice(1, None, 2)
                for up_part, gate_part in ((second, first), (first, second), (odd, even), (even, odd)):
                    options.append((up, up, up_part, gate_part, h[:, up_part], h[:, gate_part]))
        best = None
        for up, gate, up_part, gate_part, h, g in options:
            for name, act in activations:
                try:
                    predicted = act(h) if g is None else act(g) * h
                    error = float((predicted - c).norm() / scale)
                except Exception:  # an activation module that does not take a plain tensor
                    continue
                if error < tolerance and (best is None or error < best.error):
                    best = _Layout(error, down, up, gate, up_part, gate_part, name)
        if best:
            found.append(best)
    return found


def _discover(model: nn.Module) -> list[_Layout]:
    blocks = decoder_layers(model)
    _refuse_mixture_of_experts(model, blocks)
    prefix = next(name for name, module in model.named_modules() if module is blocks)
    dtype = next(model.parameters()).dtype
    tolerance = max(1e-3, 12 * torch.finfo(dtype).eps)  # bfloat16: the model rounds act(g) and the product
    layouts = []
    for index, (block, records) in enumerate(zip(blocks, _probe(model, blocks))):
        found = _match_block(records, _activations(block), tolerance)
        if len(found) != 1:
            what = "no linear layer takes an activation of other linears' outputs" if not found else \
                f"{len(found)} linear layers ({', '.join(f.down for f in found)}) take one"
            raise UserError(f"layer {index} of {type(model).__name__} has no single dense FFN ({what}); ke supports "
                            "decoder blocks with one GELU/ReLU or gated FFN, as in OLMo, Llama, GPT-2 or OPT.")
        layouts.append(replace(found[0], block=f"{prefix}.{index}" if prefix else str(index)))
    return layouts


_LAYOUTS: "weakref.WeakKeyDictionary[nn.Module, list[_Layout]]" = weakref.WeakKeyDictionary()


def _common_parent(block: nn.Module, *names: str) -> nn.Module:
    parts = [name.split(".")[:-1] for name in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return block.get_submodule(".".join(common))


def _build(model: nn.Module, layouts: list[_Layout]) -> list[FFNLayer]:
    layers = []
    for index, f in enumerate(layouts):
        block = model.get_submodule(f.block)
        layers.append(FFNLayer(index, _common_parent(block, f.down, f.up), block.get_submodule(f.down),
                               block.get_submodule(f.up), block.get_submodule(f.gate) if f.gate else None,
                               fused=f.gate == f.up, up_part=f.up_part, gate_part=f.gate_part,
                               activation=f.activation))
    return layers


def find_ffn_layers(model: nn.Module) -> list[FFNLayer]:
    """Each decoder layer's FFN, found from the module graph and checked numerically on one short forward pass
    (run once per model instance, in eval mode, before the caller's hooks are registered, ideally: hooks already
    on the model see that pass). The module paths found are cached; the modules are looked up on every call."""
    layouts = _LAYOUTS.get(model)
    if layouts is not None:
        try:
            layers = _build(model, layouts)
            if all(_is_linear(layer.down) and _is_linear(layer.up) for layer in layers):
                return layers
        except AttributeError:  # modules were replaced since: find them again
            pass
    layouts = _discover(model)
    _LAYOUTS[model] = layouts
    return _build(model, layouts)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Each decoder layer's self-attention module."""
    modules = []
    for index, block in enumerate(decoder_layers(model)):
        module = next((getattr(block, n) for n in ATTENTION_NAMES if hasattr(block, n)), None)
        if module is None:
            raise UserError(f"layer {index} of {type(model).__name__} has no attention module named "
                            f"{' or '.join(ATTENTION_NAMES)}; attention entropy needs one of these.")
        modules.append(module)
    return modules


# ---------------------------------------------------------------- loading

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
    cache_only = not local and not hub_reachable()
    if cache_only:  # no retries against an unreachable hub: the local cache or a clear error, in seconds
        kwargs["local_files_only"] = True
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **{k: v for k, v in kwargs.items()
                                                             if k in ("revision", "local_files_only")})
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as error:
        raise _load_error(source, revision, error, cache_only) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch_device).eval()
    return Loaded(model, tokenizer, provenance(source, revision, local, dtype, str(torch_device)))


def _load_error(source: str, revision: str | None, error: Exception, cache_only: bool) -> UserError:
    where = f"{source}@{revision or 'main'}"
    if cache_only:
        return UserError(f"the Hugging Face Hub is unreachable and the local cache has no {where}; connect to the "
                         "network once to download it (without HF_HUB_OFFLINE=1), or pass a local checkpoint folder.")
    hint = "check the revision with `ke checkpoints`" if revision else "check the id and your network"
    return UserError(f"could not load model {where} ({str(error).splitlines()[0][:160]}); {hint}.")


def hub_reachable() -> bool:
    """False with HF_HUB_OFFLINE=1 or when a connection to the hub fails within 3 s (then only the local cache is
    used, instead of the retries of every download)."""
    return not _offline_mode() and _hub_answers()


@lru_cache(maxsize=1)
def _hub_answers() -> bool:
    """Whether the hub's host accepts a connection (asked once per process)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError:
        return False
    return True


def context_length(config) -> int | None:
    """The longest input a model's configuration allows (learned positions) or was trained on (rotary), or None."""
    for name in ("n_positions", "max_position_embeddings", "max_sequence_length", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context(source: str, revision: str | None, seq_len: int, config=None) -> None:
    """Refuse a sequence length past the model's context: learned positions would index past their table, rotary
    ones would run on positions the model never saw. `config`: the loaded model's, else read (no weights)."""
    if config is None:
        from transformers import AutoConfig
        local = _is_local(source)
        kwargs = {} if local else {"revision": revision, "local_files_only": not hub_reachable()}
        try:
            config = AutoConfig.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as error:
            if local:
                raise UserError(f"model folder {source} holds no readable config.json "
                                f"({str(error).splitlines()[0][:120]}); pass a folder written by save_pretrained.") \
                    from None
            raise _load_error(source, revision, error, kwargs["local_files_only"]) from None
    context = context_length(config)
    if context is not None and seq_len > context:
        raise UserError(f"--seq-len {seq_len} is longer than the context of {source} ({context} tokens); pass "
                        f"--seq-len {context} or less.")


def provenance(source: str, revision: str | None, local: bool, dtype: str, device: str) -> dict:
    """Where the weights came from: the hub commit of the revision (from the branch listing, so offline use reads
    the local cache's refs and makes no network call), or the local training step."""
    info = {"model": source, "revision": revision, "commit": None, "step": None, "dtype": dtype, "device": device}
    if local:
        meta = Path(source).expanduser() / CHECKPOINT_MARKER
        if meta.exists():
            info["step"] = json.loads(meta.read_text()).get("step")
        return info
    if match := CHECKPOINT_BRANCH.match(revision or ""):
        info["step"] = int(match["step"])
        info.update({k: int(match[k]) for k in ("stage", "ingredient") if match[k]})
    if re.fullmatch(r"[0-9a-f]{40}", revision or ""):
        info["commit"] = revision
    else:
        try:
            info["commit"] = hub_refs(source).refs.get(revision or "main")
        except UserError:  # neither reachable nor cached: the weights came from elsewhere, the commit stays unknown
            pass
    return info


# ---------------------------------------------------------------- checkpoints: local runs and hub branches

@dataclass
class HubRefs:
    refs: dict[str, str]  # branch or tag name -> commit
    offline: str | None = None  # why the hub was not asked (the refs then come from the local cache), or None


_HUB_REFS: dict[str, HubRefs] = {}  # one hub listing per repo per process


def _offline_mode() -> bool:
    from huggingface_hub import constants
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or flag.upper() in {"1", "ON", "YES", "TRUE"}


def _cached_refs(repo: str) -> dict[str, str]:
    """The refs of `repo` that the local Hugging Face cache holds (branches and tags downloaded before)."""
    import huggingface_hub
    try:
        cache = huggingface_hub.scan_cache_dir()
    except Exception:  # no cache folder yet
        return {}
    return {ref: revision.commit_hash for cached in cache.repos
            if cached.repo_id == repo and getattr(cached, "repo_type", "model") == "model"
            for revision in cached.revisions for ref in revision.refs}


def hub_refs(repo: str) -> HubRefs:
    """The branches and tags of a hub repo with their commits: one `list_repo_refs` call per repo per process;
    with HF_HUB_OFFLINE=1 or an unreachable hub, the refs the local Hugging Face cache holds."""
    if repo in _HUB_REFS:
        return _HUB_REFS[repo]
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError
    reason = "HF_HUB_OFFLINE is set" if _offline_mode() else None
    if reason is None:
        try:
            listing = huggingface_hub.list_repo_refs(repo)
            found = HubRefs({ref.name: ref.target_commit for ref in [*listing.branches, *listing.tags]})
        except RepositoryNotFoundError:
            raise UserError(f"the hub has no model {repo} (or it is gated); check the id, e.g. "
                            "allenai/OLMo-1B-hf, and your access.") from None
        except Exception as error:
            reason = f"the hub is unreachable: {type(error).__name__}"
    if reason is not None:
        found = HubRefs(_cached_refs(repo), reason)
    _HUB_REFS[repo] = found
    return found


def _hub_checkpoints(source: str) -> tuple[list[Checkpoint], HubRefs]:
    listing = hub_refs(source)
    found = []
    for name, commit in listing.refs.items():
        if m := CHECKPOINT_BRANCH.match(name):
            found.append(Checkpoint(int(m["step"]), name, source, name, commit,
                                    int(m["tokens"]) if m["tokens"] else None,
                                    int(m["stage"]) if m["stage"] else None,
                                    int(m["ingredient"]) if m["ingredient"] else None))
    return sorted(found, key=lambda c: (c.stage or 1, c.ingredient or 0, c.step)), listing


def _in_stage(checkpoint: Checkpoint, stage: int | None) -> bool:
    return stage is None or (checkpoint.stage or 1) == stage  # a single-stage run is stage 1


def list_checkpoints(source: str, stage: int | None = None) -> list[Checkpoint]:
    """Checkpoints of a local training run (folders stepN/) or of a hub repo (branches stepN[-tokensXB] and
    OLMo-2's stageS[-ingredientK]-stepN-tokensXB), in training order; `stage` keeps one stage only."""
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
    found, listing = _hub_checkpoints(source)
    if not found and listing.offline:
        raise UserError(f"the local Hugging Face cache holds no checkpoint of {source} and {listing.offline}; "
                        "connect to the network (without HF_HUB_OFFLINE=1) to list its branches.")
    return [c for c in found if _in_stage(c, stage)]


def resolve_checkpoint(source: str, step: int, stage: int | None = None, ingredient: int | None = None) -> Checkpoint:
    """The checkpoint of `source` at training step `step` (never builds a branch name from the step); OLMo-2's
    stages restart their step count, so a step found in several stages or ingredients needs `stage`/`ingredient`."""
    if _is_local(source):
        matches, listing = [c for c in list_checkpoints(source) if c.step == step], None
    else:
        found, listing = _hub_checkpoints(source)
        matches = [c for c in found if c.step == step and _in_stage(c, stage)
                   and (ingredient is None or c.ingredient == ingredient)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"{source} has {len(matches)} checkpoints at step {step} "
                        f"({', '.join(c.name for c in matches)}); pass the stage (and ingredient) to choose one.")
    if listing is not None and listing.offline:
        raise UserError(f"{source} step {step} is not in the local Hugging Face cache and {listing.offline}; "
                        f"download it once with a network connection (without HF_HUB_OFFLINE=1) or pick a cached "
                        f"step ({', '.join(str(c.step) for c in found) or 'none'}).")
    where = f" in stage {stage}" if stage is not None else ""
    raise UserError(f"{source} has no checkpoint at step {step}{where}; list them with `ke checkpoints {source}`.")
