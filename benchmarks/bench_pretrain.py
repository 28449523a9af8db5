"""What bounds the miniature's pretraining on a CPU: ke.miniature.pretrain.pretrain against a minimal plain-PyTorch
loop, the model's FLOPs/s against this machine's matmul peak, and the knobs that could raise tokens/s.

    .venv/bin/python benchmarks/bench_pretrain.py                   # every part on four shapes (~20-25 min)
    .venv/bin/python benchmarks/bench_pretrain.py --quick           # a smoke run of every part (~2 min)
    .venv/bin/python benchmarks/bench_pretrain.py --parts a --shapes h64-v2048 --repeats 5

Shapes: OLMo architecture (SwiGLU, untied embeddings), 4 layers, 4 heads, ffn = 4 x hidden, seq 128, named
h<hidden>-v<vocab>; the tokenizer is the miniature's byte-level BPE trained on a small generated world (cached in
--work), the rows are that world's pretraining corpus packed exactly as pretrain() packs it.

(a) pretrain() against a plain loop over the same model (build_model), the same packed rows, the same AdamW
    (ke.train.build_optimizer), schedule and gradient clipping. Both end to end (model built, N and 2N steps);
    pretrain() saves only its final checkpoint here (save_steps=[steps]) and reads the rows packed beforehand.
    Per-step ratio = slope between N and 2N steps; fixed cost = time(N) - N x slope. The default checkpoints
    (default_save_steps) are timed separately: pretrain(2N) with them minus pretrain(2N) with the final one only.
(b) model FLOPs/s, PaLM's count (Chowdhery et al. 2022, App. B): per trained token 6 x N + 12 x L x d x T, with N
    the matmul parameters (the layers and the output matrix; the input embedding is a lookup) and 12 L d T the
    attention scores and the weighted values (forward 4 L d T, backward twice that, full T x T counted although
    a causal kernel needs about half). Peak: a 2048 x 2048 float32 matmul with 1 and 2 threads.
(c) knobs in one process, each as tokens/s relative to the plain loop with today's settings (torch's default
    threads: 2 here; 32 x 128 rows per step; float32; no torch.compile; SDPA attention; torch's default AdamW,
    a per-parameter loop on CPUs), steady state after --warmup steps, equal tokens per variant: the other thread
    count, half and double batches, foreach and fused AdamW, bf16 autocast, transformers' eager attention,
    torch.compile (its compilation time reported apart).
(p) threads against processes, in fresh subprocesses started together (a barrier before the timed steps):
    1 process x 2 threads, 1 process x 1 thread, 2 processes x 1 thread side by side (total tokens/s of both),
    and the last with half-size batches (the same tokens in twice the steps).
Times: median of --repeats rounds after a warm-up round, variants interleaved in one process, rotating order.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ke.miniature.pretrain import (PretrainConfig, _packed_rows, batch_rows, build_model,  # noqa: E402
                                   default_save_steps, pretrain)
from ke.train import build_optimizer  # noqa: E402

SHAPES = ("h32-v1024", "h32-v2048", "h64-v1024", "h64-v2048")  # any h<hidden>-v<vocab> works
WORLD_DOCS = 3000  # 1,400-2,000 rows of 128 tokens: enough distinct batches; the data order wraps around


# ----------------------------------------------------------------------------- set-up

@dataclass
class Setup:
    cfg: PretrainConfig
    corpus: Path
    tokenizer_dir: Path
    tokenizer: object
    packed: Path          # the folder pretrain() would pack the corpus into
    rows: torch.Tensor    # [n_rows, seq_len] int64, the same rows


def prepare(work: Path, shape: str, layers: int, heads: int, seq_len: int, batch_size: int) -> Setup:
    import datasets
    from transformers import AutoTokenizer
    from transformers.utils import logging

    from ke.miniature.world import WorldConfig
    from ke.miniature.zoo import build_world

    logging.disable_progress_bar()
    datasets.disable_progress_bars()
    hidden, vocab = (int(x) for x in re.fullmatch(r"h(\d+)-v(\d+)", shape).groups())
    tok_dir = work / f"tok{vocab}"
    corpus = build_world(WorldConfig(pretrain_docs=WORLD_DOCS, continual_docs=200), vocab, work / "world", tok_dir,
                         progress=False)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    packed_parent = work / f"packed-v{vocab}"
    rows = _packed_rows(corpus, tokenizer, seq_len, packed_parent)[:]["input_ids"]
    cfg = PretrainConfig(family="olmo", hidden_size=hidden, num_layers=layers, num_heads=heads,
                         intermediate_size=4 * hidden, seq_len=seq_len, batch_size=batch_size, steps=100,
                         warmup_steps=1)  # steps are set per run; the schedule does not change the cost
    return Setup(cfg, corpus, tok_dir, tokenizer, packed_parent / f"packed_seq{seq_len}", rows)


def matmul_parameters(model) -> int:
    """Parameters that multiply activations: all but the input embedding (a lookup)."""
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def flops_per_token(s: Setup) -> float:
    cfg = s.cfg
    return 6 * matmul_parameters(build_model(cfg, s.tokenizer)) + 12 * cfg.num_layers * cfg.hidden_size * cfg.seq_len


# ----------------------------------------------------------------------------- the two loops

def run_pretrain(s: Setup, steps: int, default_checkpoints: bool = False) -> float:
    """Seconds of one pretrain() call into a fresh folder that already holds the packed rows."""
    out = Path(tempfile.mkdtemp(dir=s.packed.parent.parent, prefix="run-"))
    try:
        (out / s.packed.name).symlink_to(s.packed, target_is_directory=True)
        cfg = replace(s.cfg, steps=steps, save_steps=None if default_checkpoints else [steps])
        start = time.perf_counter()
        pretrain(cfg, s.corpus, s.tokenizer_dir, out, progress=False)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out)


def make_optimizer(model, cfg: PretrainConfig, kind: str):
    """build_optimizer's AdamW (kind "default"), or the same groups with the foreach or fused implementation."""
    optimizer = build_optimizer(model, cfg.lr, weight_decay=cfg.weight_decay)
    if kind == "default":
        return optimizer
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, **{kind: True})


@dataclass
class Knobs:
    batch_size: int | None = None   # None: the setup's
    optimizer: str = "default"      # "default" | "foreach" | "fused"
    bf16: bool = False              # torch.autocast("cpu", bfloat16) around the forward pass
    compile: bool = False           # torch.compile(model)
    eager_attention: bool = False   # transformers' eager attention instead of torch's SDPA (the default)
    threads: int | None = None      # torch.set_num_threads for this variant (None: leave as is)


def plain_loop(s: Setup, steps: int, knobs: Knobs = Knobs(), warmup: int = 0) -> tuple[float, float]:
    """The minimal loop: (seconds of the whole call, seconds of the first `warmup` steps)."""
    threads = torch.get_num_threads()
    if knobs.threads and knobs.threads != threads:
        torch.set_num_threads(knobs.threads)
    try:
        start = time.perf_counter()
        cfg = replace(s.cfg, batch_size=knobs.batch_size or s.cfg.batch_size, steps=warmup + steps)
        model = build_model(cfg, s.tokenizer)
        model.train()
        if knobs.eager_attention:
            model.set_attn_implementation("eager")
        optimizer = make_optimizer(model, cfg, knobs.optimizer)
        forward = torch.compile(model) if knobs.compile else model
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if knobs.bf16 else nullcontext()
        warm = start
        for step in range(1, warmup + steps + 1):
            lr = cfg.schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            input_ids = s.rows[batch_rows(step, cfg.batch_size, len(s.rows))]
            with autocast:
                loss = forward(input_ids=input_ids, labels=input_ids, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            if step == warmup:
                warm = time.perf_counter()
        end = time.perf_counter()
        return end - start, warm - start
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def interleaved(variants: dict, repeats: int) -> dict[str, list]:
    """Run every variant (a no-argument callable) once per round, rotating the order; round 0 is not kept."""
    names = list(variants)
    results = {name: [] for name in names}
    for round_ in range(repeats + 1):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            value = variants[name]()
            if round_:
                results[name].append(value)
    return results


# ----------------------------------------------------------------------------- (a) pretrain vs plain loop

def part_a(s: Setup, steps: int, repeats: int) -> dict:
    n, n2 = steps, 2 * steps
    times = interleaved({
        "pretrain N": lambda: run_pretrain(s, n),
        "pretrain 2N": lambda: run_pretrain(s, n2),
        "plain N": lambda: plain_loop(s, n)[0],
        "plain 2N": lambda: plain_loop(s, n2)[0],
        "pretrain 2N, default checkpoints": lambda: run_pretrain(s, n2, default_checkpoints=True),
    }, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    slope_pretrain = (med["pretrain 2N"] - med["pretrain N"]) / n
    slope_plain = (med["plain 2N"] - med["plain N"]) / n
    tokens_per_step = s.cfg.batch_size * s.cfg.seq_len
    checkpoints = len(default_save_steps(n2))
    per_checkpoint = (med["pretrain 2N, default checkpoints"] - med["pretrain 2N"]) / (checkpoints - 1)
    return {"medians": med, "spread": {k: (min(v), max(v)) for k, v in times.items()},
            "end_to_end_ratio": med["plain 2N"] / med["pretrain 2N"],
            "per_step_ratio": slope_plain / slope_pretrain,
            "fixed_pretrain": med["pretrain N"] - n * slope_pretrain, "fixed_plain": med["plain N"] - n * slope_plain,
            "tokens_per_s_pretrain": tokens_per_step / slope_pretrain,
            "tokens_per_s_plain": tokens_per_step / slope_plain,
            "checkpoints": checkpoints, "seconds_per_checkpoint": per_checkpoint}


# ----------------------------------------------------------------------------- (b) FLOPs/s against the matmul peak

def matmul_peak(threads: int, size: int = 2048, repeats: int = 5) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return 2 * size ** 3 / statistics.median(times)
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- (c) knobs

def part_c(s: Setup, steps: int, warmup: int, repeats: int, with_compile: bool) -> dict:
    b = s.cfg.batch_size
    other_threads = 1 if torch.get_num_threads() > 1 else 2
    variants = {
        "baseline": Knobs(),
        f"{other_threads} thread(s)": Knobs(threads=other_threads),
        f"batch {b // 2}": Knobs(batch_size=b // 2),
        f"batch {2 * b}": Knobs(batch_size=2 * b),
        "AdamW foreach": Knobs(optimizer="foreach"),
        "AdamW fused": Knobs(optimizer="fused"),
        "bf16 autocast": Knobs(bf16=True),
        "eager attention": Knobs(eager_attention=True),
    }
    if with_compile:
        variants["torch.compile"] = Knobs(compile=True)
    tokens = steps * b * s.cfg.seq_len

    def timed(knobs: Knobs) -> float:
        rows_per_step = knobs.batch_size or b
        total, warm = plain_loop(s, tokens // (rows_per_step * s.cfg.seq_len), knobs, warmup=warmup)
        return total - warm

    compile_seconds = None
    if with_compile:  # first compiled run: how long the warm-up steps take, compilation included
        try:
            total, warm = plain_loop(s, 1, Knobs(compile=True), warmup=warmup)
            compile_seconds = warm
        except Exception as error:  # noqa: BLE001 - report, do not stop the benchmark
            print(f"torch.compile failed: {type(error).__name__}: {str(error)[:300]}")
            del variants["torch.compile"]
    times = interleaved({name: (lambda k=k: timed(k)) for name, k in variants.items()}, repeats)
    base = statistics.median(times["baseline"])
    return {"tokens": tokens, "compile_seconds": compile_seconds,
            "ratios": {name: base / statistics.median(t) for name, t in times.items()},
            "tokens_per_s": {name: tokens / statistics.median(t) for name, t in times.items()},
            "spread": {name: (tokens / max(t), tokens / min(t)) for name, t in times.items()}}


def child(args) -> None:
    """One process of the thread/process comparison: set up, report ready, wait for 'go', train, report."""
    spec = json.loads(args.child)
    torch.set_num_threads(spec["threads"])
    s = prepare(Path(spec["work"]), spec["shape"], spec["layers"], spec["heads"], spec["seq_len"], spec["batch_size"])
    plain_loop(s, 2)  # imports and first-call costs outside the timed window
    print("ready", flush=True)
    sys.stdin.readline()
    begin = time.time()
    total, warm = plain_loop(s, spec["steps"], warmup=spec["warmup"])
    print(json.dumps({"begin": begin, "end": time.time(), "seconds": total - warm,
                      "tokens": spec["steps"] * s.cfg.batch_size * s.cfg.seq_len}), flush=True)


def side_by_side(spec: dict, processes: int, threads: int) -> dict:
    """`processes` children with `threads` threads each, released together; total and per-process tokens/s."""
    command = [sys.executable, __file__, "--child", json.dumps({**spec, "threads": threads})]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    children = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                for _ in range(processes)]
    for c in children:
        while c.stdout.readline().strip() != "ready":
            if c.poll() is not None:
                raise RuntimeError("a benchmark child process failed before it was ready")
    for c in children:
        c.stdin.write("go\n")
        c.stdin.flush()
    results = [json.loads(c.stdout.read().strip().splitlines()[-1]) for c in children]
    for c in children:
        c.wait()
    per_process = [r["tokens"] / r["seconds"] for r in results]
    return {"total": sum(per_process), "per_process": statistics.mean(per_process)}


def part_processes(s: Setup, work: Path, shape: str, steps: int, warmup: int, repeats: int) -> dict:
    cfg = s.cfg
    spec = {"work": str(work), "shape": shape, "layers": cfg.num_layers, "heads": cfg.num_heads,
            "seq_len": cfg.seq_len, "batch_size": cfg.batch_size, "steps": steps, "warmup": warmup}
    half = {**spec, "batch_size": cfg.batch_size // 2, "steps": 2 * steps}  # the same tokens in half-size steps
    runs = interleaved({"1 process x 2 threads": lambda: side_by_side(spec, 1, 2),
                        "1 process x 1 thread": lambda: side_by_side(spec, 1, 1),
                        "2 processes x 1 thread": lambda: side_by_side(spec, 2, 1),
                        f"2 x 1 thread, batch {cfg.batch_size // 2}": lambda: side_by_side(half, 2, 1)}, repeats)
    total = {k: statistics.median(r["total"] for r in v) for k, v in runs.items()}
    per_process = {k: statistics.median(r["per_process"] for r in v) for k, v in runs.items()}
    base = total["1 process x 2 threads"]
    return {"total": total, "per_process": per_process, "ratios": {k: v / base for k, v in total.items()}}


# ----------------------------------------------------------------------------- report

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few steps and repeats: checks that every part runs")
    parser.add_argument("--parts", default="a,b,c,p", help="a: pretrain vs plain; b: FLOPs/s; c: knobs in one "
                        "process; p: threads vs processes (default: all)")
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help="comma-separated h<hidden>-v<vocab> (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, help="steps per timed run (a: N; c: at the baseline batch)")
    parser.add_argument("--process-steps", type=int, help="steps per process in (p) (default: 3 x --steps)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps of each run in (c) and (p)")
    parser.add_argument("--repeats", type=int, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, help="torch threads of this process (default: torch's choice)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of (c)")
    parser.add_argument("--work", help="folder for the world, tokenizers and packed rows (default: a temporary one)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (4 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    parts = set(args.parts.split(","))
    bad = [shape for shape in args.shapes.split(",") if not re.fullmatch(r"h\d+-v\d+", shape)]
    if bad:
        parser.error(f"--shapes takes names like h32-v1024 (h<hidden>-v<vocab>); got {bad[0]!r}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_pretrain-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; {args.layers} layers, {args.heads} heads, seq {args.seq_len}, "
          f"batch {args.batch_size}; N = {steps} steps, median of {repeats}")

    peaks = {}
    if "b" in parts:
        peaks = {t: matmul_peak(t) for t in sorted({1, 2, torch.get_num_threads()})}
        print(f"\n(b) float32 2048x2048 matmul peak: 1 thread {peaks[1] / 1e9:.1f} GFLOP/s, "
              f"2 threads {peaks[2] / 1e9:.1f} GFLOP/s")
    for shape in args.shapes.split(","):
        s = prepare(work, shape, args.layers, args.heads, args.seq_len, args.batch_size)
        model = build_model(s.cfg, s.tokenizer)
        print(f"\n=== {shape}: hidden {s.cfg.hidden_size}, vocab {len(s.tokenizer)}, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.3f}M parameters "
              f"({matmul_parameters(model) / 1e6:.3f}M in matmuls), {len(s.rows)} packed rows; "
              f"load average {os.getloadavg()[0]:.2f}")
        if "a" in parts:
            a = part_a(s, steps, repeats)
            print("(a) seconds, median (min-max): " + "; ".join(
                f"{k} {v:.2f} ({a['spread'][k][0]:.2f}-{a['spread'][k][1]:.2f})" for k, v in a["medians"].items()))
            print(f"(a) pretrain / plain tokens/s: per step {a['per_step_ratio']:.3f} (pretrain "
                  f"{a['tokens_per_s_pretrain']:.0f}, plain {a['tokens_per_s_plain']:.0f} tokens/s); end to end at "
                  f"2N {a['end_to_end_ratio']:.3f}; fixed cost pretrain {a['fixed_pretrain']:.2f} s, plain "
                  f"{a['fixed_plain']:.2f} s")
            step_s = s.cfg.batch_size * s.cfg.seq_len / a["tokens_per_s_pretrain"]
            print(f"(a) default checkpoints: {a['seconds_per_checkpoint']:.3f} s each ({a['checkpoints']} at 2N); "
                  f"a 1500-step run with its {len(default_save_steps(1500))} default checkpoints: "
                  f"{len(default_save_steps(1500)) * a['seconds_per_checkpoint'] / (1500 * step_s):.1%} of the steps' "
                  f"time")
            if peaks:
                fpt = flops_per_token(s)
                achieved = fpt * a["tokens_per_s_pretrain"]
                print(f"(b) {fpt / 1e6:.2f} MFLOP per token -> {achieved / 1e9:.2f} GFLOP/s = "
                      f"{achieved / peaks[torch.get_num_threads()]:.1%} of the {torch.get_num_threads()}-thread "
                      "matmul peak")
        if "c" in parts:
            c = part_c(s, steps, args.warmup, repeats, with_compile=not args.no_compile)
            print(f"(c) knobs, {c['tokens']} timed tokens each, tokens/s relative to the baseline"
                  + (f"; torch.compile's first {args.warmup} steps took {c['compile_seconds']:.1f} s"
                     if c["compile_seconds"] is not None else ""))
            for name, ratio in c["ratios"].items():
                lo, hi = c["spread"][name]
                print(f"    {name:<16}{ratio:>7.3f}   {c['tokens_per_s'][name]:>8.0f} tokens/s ({lo:.0f}-{hi:.0f})")
            if peaks:
                fpt = flops_per_token(s)
                mine, other = torch.get_num_threads(), 1 if torch.get_num_threads() > 1 else 2
                print(f"(b) plain loop at {mine} thread(s): {fpt * c['tokens_per_s']['baseline'] / peaks[mine]:.1%} "
                      f"of that peak; at {other}: "
                      f"{fpt * c['tokens_per_s'][f'{other} thread(s)'] / peaks[other]:.1%} of that peak")
        if "p" in parts:
            p = part_processes(s, work, shape, args.process_steps or 3 * steps, args.warmup, repeats)
            print("(p) total tokens/s relative to 1 process x 2 threads:")
            for name, ratio in p["ratios"].items():
                print(f"    {name:<28}{ratio:>7.3f}   total {p['total'][name]:>8.0f} tokens/s, "
                      f"{p['per_process'][name]:>8.0f} per process")
    print(f"\ntotal {time.time() - started:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    if not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
