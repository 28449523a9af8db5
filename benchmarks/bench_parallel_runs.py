"""Why `ke book` computes continual-learning runs two at a time with one thread each: the same runs, one after
another with all threads (what a chapter does on its own) against side by side with an equal share of threads.

    .venv/bin/python benchmarks/bench_parallel_runs.py                  # 4 runs from the default zoo's final model
    .venv/bin/python benchmarks/bench_parallel_runs.py --preset smoke   # toy models: mostly start-up overhead

Both variants run the same continual-learning configuration (the preset's baseline, --steps updates) from the
same checkpoint with different seeds, into fresh temporary folders, in this process's machine at the same time
of day (variants alternate, --repeats rounds); the ratio parallel / sequential is what matters (< 1: faster).
Needs the preset's zoo (`make book` or `ke book --preset NAME` trains it).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one_run(preset_name: str, seed: int, steps: int, out: str, threads: int) -> None:
    """The preset's baseline run from the primary model's final checkpoint, shortened to `steps`, into `out`."""
    import torch

    from ke.book.execute import execute
    from ke.book.plan import make_plan
    from ke.book.presets import load_preset

    torch.set_num_threads(threads)
    plan = make_plan(load_preset(preset_name))
    model = next(k for k, role in plan.roles.items() if role == "olmo-1b")
    run = plan.run(model, plan.final_steps[model])
    cfg = replace(run.config, steps=steps, injections=min(run.config.injections, steps), eval_every=steps, seed=seed)
    execute(replace(run, config=cfg, out_dir=Path(out)))


def timed(preset: str, runs: int, steps: int, jobs: int, root: Path) -> float:
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(one_run, preset, seed, steps, str(root / f"j{jobs}-s{seed}"), max(1, cores // jobs))
                   for seed in range(runs)]
        for future in futures:
            future.result()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    sequential, parallel = [], []
    for _ in range(args.repeats):
        for jobs, times in ((1, sequential), (2, parallel)):
            with tempfile.TemporaryDirectory() as tmp:   # fresh folders: nothing is read back from a cache
                times.append(timed(args.preset, args.runs, args.steps, jobs, Path(tmp)))
    seq, par = statistics.median(sequential), statistics.median(parallel)
    print(f"{args.runs} runs of {args.steps} steps ({args.preset}), {os.cpu_count()} cores: "
          f"sequential {seq:.1f} s, 2 side by side {par:.1f} s, ratio {par / seq:.2f}")


if __name__ == "__main__":
    main()
