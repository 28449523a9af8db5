"""Knowledge entropy (Kim et al., ICLR 2025): measure, continually train, resuscitate.

The public API, by module (imported on first use, so `import ke` stays light):
"""
import importlib
import os

# OpenMP threads that spin while waiting make small CPU models up to 10x slower whenever another process
# competes for the cores (measured on a shared 2-core machine). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"

API = {
    "load_model": "models",              # a causal LM and its tokenizer: local folder or hub id + revision
    "find_ffn_layers": "models",         # each layer's FFN as key-value memory (Eq. 1)
    "EntropySettings": "entropy",
    "measure": "entropy",                # knowledge / attention / next-token entropy of a model on documents
    "run_entropy": "entropy",            # the same for a checkpoint, cached as entropy.json + coefficients
    "load_fictional_knowledge": "knowledge",
    "ContinualConfig": "continual",
    "continual_learning": "continual",   # continual knowledge learning: A and F (Section 4)
    "resuscitate": "resuscitate",        # Algorithm 1, in place (Section 5)
    "UserError": "errors",
}
__all__ = list(API)
__doc__ += "".join(f"\n- `ke.{name}` (ke.{module})" for name, module in API.items())


def __getattr__(name):
    if name in API:
        return getattr(importlib.import_module(f".{API[name]}", __name__), name)
    raise AttributeError(f"module 'ke' has no attribute {name!r}")
