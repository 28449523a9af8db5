"""The model system's cost, as ratios against a baseline run in the same process (or in interleaved processes):

1. pretraining tokens per second of the chosen 1B role (output matrix untied and decayed) beside the previous
   default's (tied to the input embeddings), on the default world, alternating the two `--repeats` times;
2. the allocator settings `ke book` gives its workers (ke.book.build.ALLOCATOR): the same short pretraining run
   in child processes with and without them, alternating: wall and system time, minor page faults.

    python benchmarks/bench_model_system.py [--steps 150] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def setup():
    from ke.book.execute import execute
    from ke.book.plan import make_plan
    from ke.book.presets import load_preset
    plan = make_plan(load_preset("default"))
    execute(plan.world)
    return next(r for r in plan.pretraining if r.model == "olmo")


def train_once(steps: int, tie: bool, out: Path) -> dict:
    """One short pretraining run of the default 1B role's shape; seconds and resource use of this process."""
    import torch

    from ke.miniature.pretrain import pretrain
    torch.set_num_threads(1)
    run = setup()
    cfg = replace(run.config, steps=steps, save_steps=[0], warmup_steps=1, tie_embeddings=tie)
    shutil.rmtree(out, ignore_errors=True)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    pretrain(cfg, run.corpus, run.tokenizer, out, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": time.perf_counter() - started, "tokens": steps * cfg.batch_size * cfg.seq_len,
            "system": after.ru_stime - before.ru_stime, "user": after.ru_utime - before.ru_utime,
            "minor_faults": after.ru_minflt - before.ru_minflt}


def child(steps: int, allocator: bool, work: Path) -> dict:
    from ke.book.build import ALLOCATOR
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR}
    if allocator:
        env.update(ALLOCATOR)
    out = subprocess.run([sys.executable, __file__, "--child", str(steps), "--work", str(work)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_once(args.child, False, Path(args.work) / "run")))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-model-system-"))
    rates = {"tied (previous default)": [], "untied, decayed (model system)": []}
    for _ in range(args.repeats):
        for name, tie in (("tied (previous default)", True), ("untied, decayed (model system)", False)):
            r = train_once(args.steps, tie, work / "run")
            rates[name].append(r["tokens"] / r["seconds"])
    best = {name: max(v) for name, v in rates.items()}
    base = best["tied (previous default)"]
    print(f"pretraining, {args.steps} steps, best of {args.repeats} (tokens/s; ratio to the tied output matrix):")
    for name, value in best.items():
        print(f"  {name:32s} {value:9.0f}  {value / base:.3f}")
    runs = {"default allocator": [], "ke book's ALLOCATOR": []}
    for _ in range(args.repeats):
        runs["default allocator"].append(child(args.steps, False, work))
        runs["ke book's ALLOCATOR"].append(child(args.steps, True, work))
    print("allocator, child processes (median of the repeats; ratios to the default allocator):")
    median = {name: {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in rs[0]} for name, rs in runs.items()}
    ref = median["default allocator"]
    for name, m in median.items():
        print(f"  {name:22s} wall {m['seconds']:6.1f} s ({m['seconds'] / ref['seconds']:.2f})  system "
              f"{m['system']:5.2f} s ({m['system'] / max(ref['system'], 1e-9):.2f})  user {m['user']:6.1f} s  "
              f"minor faults {m['minor_faults']:>9,} ({m['minor_faults'] / ref['minor_faults']:.3f})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
