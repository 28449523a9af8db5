"""What knowledge entropy's reduced quantity costs through ke's hooks and through nnsight, against a plain forward.

    .venv/bin/python benchmarks/bench_entropy_peers.py           # OLMo-1B-shaped layers, 2 layers, 1 x 2048 tokens
    .venv/bin/python benchmarks/bench_entropy_peers.py --layers 4 --batch-size 2
    .venv/bin/python benchmarks/bench_entropy_peers.py --quick   # small model, 2 x 256 tokens: checks it runs

Model: OLMo-1B's layer shape (hidden 2048, FFN 8192 SwiGLU, 16 heads, vocab 50280, tied embeddings) with --layers
layers instead of 16, random weights; documents of random token ids at the paper's length 2048 (every second one
3/4 as long, so that padding is excluded from the means), through a word-level tokenizer where "t<i>" is token i.

Variants, all under torch.no_grad() on the same batches, attention mask included, logits of the last position only:
  (a) plain forward
  (b) ke.entropy.measure(): forward pre-hooks on each down projection reduce |C| to per-layer sums
  (n) nnsight 0.8 (`nnsight.NNsight(model)`, as its documentation shows for any torch module, on a copy of the
      model since wrapping instruments the modules in place): one `model.trace(...)` per batch whose body reads
      each layer's `mlp.down_proj.input` in execution order and appends the per-layer sum of per-document means
      of |C| to a list saved with `nnsight.save`. The input is used inline: bound to a name in the trace body
      (`c = ....input`), it stayed alive past its layer, one extra [batch, tokens, ffn] tensor at the peak
      (+20% peak tensor memory here; `del c` did not release it).
Both (b) and (n) give C-bar (Eq. 2's per-slot mean |coefficient| over documents of the per-document mean over real
tokens); the script asserts they agree to 1e-4 relative before it compares costs.
Time: median of --repeats rounds after a warm-up round, variants interleaved in one process (rotating order).
Memory: peak bytes of live tensors during one run (torch.profiler, profile_memory=True; nnsight 0.8 runs the trace
body on the main thread, and a tensor allocated there was checked to count); with --rss N, also the peak RSS growth
(VmHWM after minus VmRSS before, after one untimed run), median of N fresh subprocesses per variant.
Importing nnsight patches torch (e.g. Tensor.backward) process-wide; (a) and (b) run with it imported too.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ke.data import pad_rows  # noqa: E402
from ke.entropy import EntropySettings, measure  # noqa: E402
from measure import (add_rss_arguments, interleaved_times, random_olmo, peak_tensor_bytes,  # noqa: E402
                     print_peak_rss_growth, rss_growths)


@dataclass
class BenchConfig:
    hidden: int = 2048     # OLMo-1B
    ffn: int = 8192
    heads: int = 16
    vocab: int = 50280
    layers: int = 2        # OLMo-1B has 16
    seq_len: int = 2048    # the paper's measurement length
    batch_size: int = 1
    num_docs: int = 2
    repeats: int = 3
    seed: int = 0


QUICK = dict(hidden=256, ffn=1024, heads=4, vocab=4096, seq_len=256, batch_size=2, num_docs=4, repeats=2)
VARIANTS = {"a": "plain forward", "b": "ke measure() hooks", "n": "nnsight trace"}


@dataclass
class Bench:
    cfg: BenchConfig
    model: torch.nn.Module
    traced: object          # nnsight.NNsight(model)
    tokenizer: object
    documents: list[str]
    batches: list           # (input_ids, attention_mask) of batch_size documents each


def build(cfg: BenchConfig) -> Bench:
    import nnsight
    model, tokenizer = random_olmo(cfg.vocab, cfg.hidden, cfg.ffn, cfg.layers, cfg.heads, cfg.seq_len, cfg.seed)
    lengths = [cfg.seq_len if i % 2 == 0 else 3 * cfg.seq_len // 4 for i in range(cfg.num_docs)]
    rows = [torch.randint(3, cfg.vocab, (n,)).tolist() for n in lengths]
    documents = [" ".join(f"t{i}" for i in row) for row in rows]
    assert tokenizer(documents[1])["input_ids"] == rows[1]
    batches = [pad_rows(rows[s:s + cfg.batch_size], tokenizer.pad_token_id)
               for s in range(0, len(rows), cfg.batch_size)]
    # nnsight instruments the modules it wraps (their forward becomes its controller), so it gets a copy of its
    # own and (a) and (b) run the untouched model
    return Bench(cfg, model, nnsight.NNsight(copy.deepcopy(model)), tokenizer, documents, batches)


@torch.no_grad()
def plain_forward(bench: Bench) -> None:
    for ids, mask in bench.batches:
        bench.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)


def ke_measure(bench: Bench) -> torch.Tensor:
    settings = EntropySettings(seq_len=bench.cfg.seq_len, batch_size=bench.cfg.batch_size)
    return measure(bench.model, bench.tokenizer, bench.documents, settings, progress=False).mean_abs_coefficients


@torch.no_grad()
def nnsight_measure(bench: Bench) -> torch.Tensor:
    """C-bar [layers, ffn] through nnsight: one trace per batch; its body runs interleaved with the forward pass,
    so each layer's coefficients are reduced as soon as they exist and only the per-layer sums are saved."""
    import nnsight
    total = 0
    for ids, mask in bench.batches:
        weights = (mask.double() / mask.sum(1, keepdim=True)).float().unsqueeze(1)  # [B, 1, T], rows sum to 1
        with bench.traced.trace(input_ids=ids, attention_mask=mask, logits_to_keep=1):
            sums = nnsight.save([])
            for layer in bench.traced.model.layers:  # .input of down_proj: the coefficients [B, T, ffn]
                sums.append(torch.bmm(weights, layer.mlp.down_proj.input.abs())[:, 0].double().sum(0))
        total = total + torch.stack(sums)
    return (total / len(bench.documents)).float()


def run_variant(bench: Bench, name: str):
    return {"a": plain_forward, "b": ke_measure, "n": nnsight_measure}[name](bench)


def rss_child(cfg: BenchConfig, name: str) -> None:
    """One variant in this fresh process (after one untimed run): print its peak RSS growth in bytes."""
    bench = build(cfg)
    run_variant(bench, name)
    print_peak_rss_growth(lambda: run_variant(bench, name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model and batches (seconds)")
    parser.add_argument("--layers", type=int, help="layers of the OLMo-1B-shaped stack (default 2)")
    parser.add_argument("--batch-size", type=int, help="documents per forward pass (default 1)")
    parser.add_argument("--num-docs", type=int, help="documents measured per run (default 2)")
    parser.add_argument("--repeats", type=int, help="timed rounds after the warm-up round")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    add_rss_arguments(parser, VARIANTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(BenchConfig(**json.loads(args.config)), args.rss_child)
    overrides = {k: getattr(args, k) for k in ("layers", "batch_size", "num_docs", "repeats") if getattr(args, k)}
    cfg = replace(BenchConfig(**(QUICK if args.quick else {})), **overrides)
    started = time.time()

    bench = build(cfg)
    import nnsight
    params = sum(p.numel() for p in bench.model.parameters())
    print(f"model: OLMo-1B-shaped layers (hidden {cfg.hidden}, ffn {cfg.ffn}, {cfg.heads} heads, vocab {cfg.vocab}, "
          f"tied), {cfg.layers} layers: {params / 1e6:.0f}M parameters; {cfg.num_docs} documents of "
          f"{cfg.seq_len} and {3 * cfg.seq_len // 4} tokens in batches of {cfg.batch_size}; torch {torch.__version__}, "
          f"nnsight {nnsight.__version__}, {torch.get_num_threads()} threads, load average "
          f"{__import__('os').getloadavg()[0]:.2f}")
    ke_cbar, nnsight_cbar = ke_measure(bench), nnsight_measure(bench)
    torch.testing.assert_close(nnsight_cbar, ke_cbar, rtol=1e-4, atol=0)
    print(f"C-bar: nnsight equals ke's (largest relative difference "
          f"{float(((nnsight_cbar - ke_cbar).abs() / ke_cbar.abs()).max()):.1e})")

    names = list(VARIANTS)
    times = interleaved_times(lambda name: run_variant(bench, name), names, cfg.repeats)
    memory = {name: peak_tensor_bytes(lambda: run_variant(bench, name)) for name in names}
    del bench
    gc.collect()
    rss = rss_growths(__file__, asdict(cfg), names, args.rss)

    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{'variant':<26}{'median s':>9}{'min-max s':>14}{'/ (a)':>7}{'/ (b)':>7}{'peak MiB':>10}{'/ (a)':>7}"
          f"{'/ (b)':>7}" + (f"{'RSS MiB':>9}{'/ (a)':>7}{'/ (b)':>7}" if rss else ""))
    for name in names:
        print(f"({name}) {VARIANTS[name]:<22}{median[name]:>9.2f}"
              f"{f'{min(times[name]):.2f}-{max(times[name]):.2f}':>14}{median[name] / median['a']:>7.3f}"
              f"{median[name] / median['b']:>7.3f}{memory[name] / 2**20:>10.1f}{memory[name] / memory['a']:>7.3f}"
              f"{memory[name] / memory['b']:>7.3f}"
              + (f"{rss[name] / 2**20:>9.0f}{rss[name] / rss['a']:>7.2f}{rss[name] / rss['b']:>7.2f}" if rss else ""))
    print(f"\n(n)/(b): time {median['n'] / median['b']:.3f}, peak tensor memory {memory['n'] / memory['b']:.3f}; "
          f"(n)/(a): time {median['n'] / median['a']:.3f}; total {time.time() - started:.0f} s; load average now "
          f"{__import__('os').getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
