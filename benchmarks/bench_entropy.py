"""What measuring knowledge entropy costs: ke.entropy.measure against a plain forward pass, and against keeping
every layer's per-token memory coefficients until the forward pass ends (the official script's approach).

    .venv/bin/python benchmarks/bench_entropy.py           # ~51M-parameter OLMo-shaped model, 8 x 512 tokens
    .venv/bin/python benchmarks/bench_entropy.py --quick   # ~14M parameters (mostly embeddings), 4 x 128 tokens

Variants, all under torch.no_grad() on the same token batches (attention mask included):
  (a)  plain forward, logits of the last position only (logits_to_keep=1): the forward that measure() runs
  (a') plain forward with all logits, i.e. what model(ids, attention_mask=mask) does by default
  (b)  ke.entropy.measure(): hooks reduce |C| to [layers, ffn_dim] sums inside the forward pass
  (c)  official approach: every layer's coefficient tensor [batch, tokens, ffn_dim] is kept until the forward
       pass ends, then reduced (the official model returns them); same forward as (a)
Time: median of --repeats runs after one warm-up round, variants interleaved in one process (rotating order).
Memory: peak bytes of live tensors allocated during one run (torch.profiler, profile_memory=True); with
--rss N also the peak RSS growth (VmHWM after minus VmRSS before, high-water mark reset after the model is
built) as the median of N fresh subprocesses per variant; RSS varies by +-30 MiB between identical runs here.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ke.entropy import EntropySettings, measure  # noqa: E402
from measure import (add_rss_arguments, interleaved_times, random_olmo, peak_tensor_bytes,  # noqa: E402
                     print_peak_rss_growth, rss_growths)
from ke.models import find_ffn_layers, hooks  # noqa: E402


@dataclass
class BenchConfig:
    # OLMo-1B's shape (SwiGLU, ffn = 4 x hidden, tied embeddings, vocab 50280) scaled down to ~51M parameters:
    # 25.7M in the embedding, 6 x 4.2M in the layers.
    hidden: int = 512
    layers: int = 6
    heads: int = 8
    ffn: int = 2048
    vocab: int = 50280
    batch_size: int = 8
    seq_len: int = 512
    num_batches: int = 1
    repeats: int = 3
    seed: int = 0


QUICK = dict(hidden=128, layers=2, heads=4, ffn=512, batch_size=4, seq_len=128, repeats=5)
VARIANTS = {"a": "plain forward (last logits)", "a_full": "plain forward (all logits)",
            "b": "ke measure() hooks", "c": "keep all coefficients"}


@dataclass
class Bench:
    cfg: BenchConfig
    model: torch.nn.Module
    tokenizer: object
    documents: list
    batches: list


def build(cfg: BenchConfig) -> Bench:
    """Random OLMo-shaped model; a word-level tokenizer where the word "t<i>" is token i, so each document
    tokenizes to exactly the random ids it was written from."""
    model, tokenizer = random_olmo(cfg.vocab, cfg.hidden, cfg.ffn, cfg.layers, cfg.heads, cfg.seq_len, cfg.seed)
    ids = torch.randint(3, cfg.vocab, (cfg.num_batches * cfg.batch_size, cfg.seq_len))
    documents = [" ".join(f"t{i}" for i in row) for row in ids.tolist()]
    assert tokenizer(documents[:1])["input_ids"][0] == ids[0].tolist()
    batches = [(ids[s:s + cfg.batch_size], torch.ones_like(ids[s:s + cfg.batch_size]))
               for s in range(0, len(ids), cfg.batch_size)]
    return Bench(cfg, model, tokenizer, documents, batches)


@torch.no_grad()
def plain_forward(bench: Bench, all_logits: bool):
    for ids, mask in bench.batches:
        bench.model(input_ids=ids, attention_mask=mask, **({} if all_logits else {"logits_to_keep": 1}))


def ke_measure(bench: Bench) -> torch.Tensor:
    settings = EntropySettings(seq_len=bench.cfg.seq_len, batch_size=bench.cfg.batch_size)
    return measure(bench.model, bench.tokenizer, bench.documents, settings, progress=False).mean_abs_coefficients


@torch.no_grad()
def keep_all_coefficients(bench: Bench) -> torch.Tensor:
    """Official approach: the forward pass hands back every layer's coefficients; reduce them afterwards."""
    layers = find_ffn_layers(bench.model)
    sums = 0
    for ids, mask in bench.batches:
        kept = []
        with hooks(pre=[(layer.down, lambda module, args: kept.append(args[0])) for layer in layers]):
            bench.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
        weights = mask.float() / mask.sum(1, keepdim=True)  # per-document mean over real tokens
        sums = sums + torch.stack([torch.einsum("bt,btm->m", weights, c.abs()) for c in kept]).double()
        del kept
    return (sums / len(bench.documents)).float()


def run_variant(bench: Bench, name: str):
    if name in ("a", "a_full"):
        return plain_forward(bench, all_logits=name == "a_full")
    return ke_measure(bench) if name == "b" else keep_all_coefficients(bench)


def rss_child(cfg: BenchConfig, name: str) -> None:
    """One variant in this fresh process: print its peak RSS growth in bytes."""
    bench = build(cfg)
    print_peak_rss_growth(lambda: run_variant(bench, name))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model and batches (seconds)")
    parser.add_argument("--repeats", type=int, help="timed runs per variant after the warm-up round")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    add_rss_arguments(parser, VARIANTS)
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(BenchConfig(**json.loads(args.config)), args.rss_child)
    cfg = replace(BenchConfig(**(QUICK if args.quick else {})), **({"repeats": args.repeats} if args.repeats else {}))
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()

    bench = build(cfg)
    params = sum(p.numel() for p in bench.model.parameters())
    print(f"model: OLMo-shaped, hidden {cfg.hidden}, {cfg.layers} layers, ffn {cfg.ffn}, vocab {cfg.vocab}, "
          f"tied embeddings: {params / 1e6:.1f}M parameters; {cfg.num_batches} batch(es) of "
          f"{cfg.batch_size} x {cfg.seq_len} tokens; torch {torch.__version__}, {torch.get_num_threads()} threads")
    # (b) and (c) must agree before their costs are compared.
    torch.testing.assert_close(ke_measure(bench), keep_all_coefficients(bench), rtol=1e-4, atol=1e-6)

    names = list(VARIANTS)
    times = interleaved_times(lambda name: run_variant(bench, name), names, cfg.repeats)
    memory = {name: peak_tensor_bytes(lambda: run_variant(bench, name)) for name in names}
    del bench
    gc.collect()
    rss = rss_growths(__file__, asdict(cfg), names, args.rss)

    kept = cfg.layers * cfg.batch_size * cfg.seq_len * cfg.ffn * 4
    print(f"\n(c) keeps {cfg.layers} x {cfg.batch_size} x {cfg.seq_len} x {cfg.ffn} float32 = {kept / 2**20:.0f} MiB "
          "of coefficients per batch (analytic)")
    print(f"{'variant':<34}{'median s':>9}{'min-max s':>14}{'/ (a)':>7}{'peak MiB':>10}{'/ (a)':>7}"
          + (f"{'RSS MiB':>9}{'/ (a)':>7}" if rss else ""))
    median_a = statistics.median(times["a"])
    for name in names:
        t = statistics.median(times[name])
        print(f"({name.replace('_full', chr(39))}) {VARIANTS[name]:<29}{t:>9.3f}"
              f"{f'{min(times[name]):.2f}-{max(times[name]):.2f}':>14}{t / median_a:>7.2f}"
              f"{memory[name] / 2**20:>10.1f}{memory[name] / memory['a']:>7.3f}"
              + (f"{rss[name] / 2**20:>9.0f}{rss[name] / rss['a']:>7.2f}" if rss else ""))
    time_ratio = statistics.median(times["b"]) / median_a
    memory_ratio = memory["b"] / memory["a"]
    verdict = "meets" if max(time_ratio, memory_ratio) <= 1.10 else "MISSES"
    print(f"\n(b)/(a): time {time_ratio:.3f}, peak tensor memory {memory_ratio:.3f} -> {verdict} the 1.10 target; "
          f"(c)/(a) peak tensor memory {memory['c'] / memory['a']:.2f}; total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
