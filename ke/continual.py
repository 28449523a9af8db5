"""Continual knowledge learning: train a checkpoint on a corpus with fictional knowledge injected, measure A and F.

Paper Sec. 4.1 and App. B.4; mechanics as in the official `olmo/train.py` and its 1B continual config:
- the corpus is packed into rows of seq_len tokens and read in a fixed order (no shuffle, drop_last);
  an epoch is the first steps x batch_size rows;
- steps count from 1 (the s-th update is step s, as OLMo counts); update s runs at ke.train.Schedule.lr(s)
  (OLMo's CosWithWarmup: linear warmup from 0.1 lr, cosine down to 0.1 lr at the final step);
- with interval = steps / injections, the batch of every step s with s % interval == 0 gets injection
  group ((s / interval - 1) mod injections) + 1: item i of the group is prepended to row i of the GLOBAL batch
  and the row is cut back to seq_len. With one epoch: steps interval, 2 interval, ..., the last at the final step;
- with several epochs the schedule repeats each epoch (what the official arithmetic
  `(step // interval) % 10 or 10` does when only the duration grows): each group once per epoch;
- evaluation at step 0 (θ_PT), after every eval interval's update, and after the final update.

Parallelism (`accelerate launch ... -m ke.cli continual ...` or any script calling `continual_learning`):
the global batch of batch_size rows is built once per update, then process r takes rows [r B/N, (r+1) B/N)
(the official `i // device_batch_size`) and cuts them into micro-batches of micro_batch_size rows whose
gradients accumulate (`Accelerator(gradient_accumulation_steps=...)`). Every row holds exactly seq_len tokens,
so the mean of the micro-batch mean losses is the global batch's mean token loss and the update equals one
full-batch update up to float rounding. Launched by torchrun or `accelerate launch --multi_gpu`, on GPUs or CPUs
(gloo; see ke.distributed). Sharded (FSDP2): `--config_file ke/configs/fsdp.yaml`.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

import ke
from ke.data import load_corpus
from ke.errors import UserError
from ke.knowledge import FictionalKnowledge, Probe, injection_schedule, probes
from ke.metrics import NORMALISATIONS, acquisition, forgetting, knowledge_score, probe_log_probs
from ke.resuscitate import set_attention_temperature, temperature_at
from ke.storage import (config_key, files_in, fingerprint, normalise, read_cached, save_folder_atomically,
                        write_cached, write_json_atomically)
from ke.train import MIXED_PRECISION, Schedule, build_optimizer, pack_texts

RESULT_FILE = "result.json"
LOG_FILE = "train_log.jsonl"
RESUME_DIR = "resume"            # accelerate's save_state folder of the last evaluation, plus RESUME_FILE
RESUME_FILE = "resume.json"      # key, step and curve; written last, so a folder without it is incomplete
MODEL_DIR = "model"
FSDP_CONFIG = Path(__file__).with_name("configs") / "fsdp.yaml"
VERSION = 1  # of a result's meaning: bump it to recompute every cached run (see ke.storage)


@dataclass
class ContinualConfig:
    """One continual-learning run. Defaults: the official 1B recipe's shape, shortened (160 steps)."""
    steps: int = 160                  # optimizer updates per epoch (rows read per epoch: steps x batch_size)
    batch_size: int = 32              # global batch in rows, whatever the number of processes
    micro_batch_size: int | None = None  # rows per forward per process; None: the process's whole share
    seq_len: int = 128
    lr: float = 4e-4                  # peak learning rate
    warmup_fraction: float = 0.05     # of all updates (official: 80 of 1600)
    warmup_start: float = 0.1         # warmup starts at 0.1 lr (OLMo CosWithWarmup)
    lr_floor: float = 0.1             # cosine ends at 0.1 lr (alpha_f)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5                 # OLMo's hard-coded AdamW eps
    grad_clip: float = 1.0
    epochs: int = 1
    injections: int = 10              # injection events per epoch; steps must be a multiple
    eval_every: int | None = None     # None -> the injection interval (official eval_interval 160)
    eval_batch_size: int = 16         # official device_eval_batch_size
    seed: int = 0
    probe_normalisation: str = "per_token"   # or "official" (see ke.metrics.probe_log_probs)
    attention_temperature: float = 1.0
    temperature_decay: bool = True    # T goes linearly from attention_temperature to 1 over the run
    mixed_precision: str = "no"       # accelerate's: "no" | "bf16" | "fp16"
    save_model: bool = False          # also save the final model (full weights) to out_dir/model

    @property
    def total_steps(self) -> int:
        return self.steps * self.epochs

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_fraction * self.total_steps)

    @property
    def interval(self) -> int:
        return self.steps // self.injections

    @property
    def eval_interval(self) -> int:
        return self.eval_every or self.interval


class Tasks(Protocol):
    """Downstream tasks for P (e.g. ke.downstream.TaskSet): accuracy in % per task, and a content hash."""
    def evaluate(self, model, tokenizer, batch_size: int) -> dict[str, float]: ...
    def fingerprint(self) -> str: ...


def validate(cfg: ContinualConfig) -> None:
    """Raise UserError naming the first bad field of `cfg` (checks that need no process count)."""
    for name in ("steps", "batch_size", "epochs", "injections", "eval_batch_size"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(cfg, name)}.")
    if cfg.micro_batch_size is not None and (not isinstance(cfg.micro_batch_size, int) or cfg.micro_batch_size <= 0):
        raise UserError(f"--micro-batch-size must be a positive integer; got {cfg.micro_batch_size}.")
    if cfg.seq_len < 2:
        raise UserError(f"--seq-len must be at least 2; got {cfg.seq_len}.")
    if cfg.steps % cfg.injections:
        raise UserError(f"--steps ({cfg.steps}) must be a multiple of --injections ({cfg.injections}) so that the "
                        f"last injection falls on the final step.")
    if not cfg.lr > 0:
        raise UserError(f"--lr must be positive; got {cfg.lr}.")
    if not 0 <= cfg.warmup_fraction < 1 or not 0 <= cfg.warmup_start <= 1 or not 0 <= cfg.lr_floor <= 1:
        raise UserError("--warmup-fraction must lie in [0, 1), --warmup-start and --lr-floor in [0, 1].")
    if cfg.weight_decay < 0 or cfg.grad_clip <= 0:
        raise UserError(f"--weight-decay must be >= 0 and --grad-clip > 0; got {cfg.weight_decay}, {cfg.grad_clip}.")
    if cfg.eval_every is not None and cfg.eval_every <= 0:
        raise UserError(f"--eval-every must be a positive integer; got {cfg.eval_every}.")
    if not cfg.attention_temperature > 0:
        raise UserError(f"--attention-temperature must be positive; got {cfg.attention_temperature}.")
    if cfg.probe_normalisation not in NORMALISATIONS:
        raise UserError(f"--probe-normalisation must be one of {', '.join(NORMALISATIONS)}; "
                        f"got {cfg.probe_normalisation!r}.")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise UserError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}; got {cfg.mixed_precision!r}.")


def check_tasks_object(tasks) -> None:
    """Raise UserError unless `tasks` is None or has evaluate(model, tokenizer, batch_size) and fingerprint()."""
    if tasks is not None and not (callable(getattr(tasks, "evaluate", None))
                                  and callable(getattr(tasks, "fingerprint", None))):
        raise UserError(f"tasks must be None or an object with evaluate(model, tokenizer, batch_size) and "
                        f"fingerprint(), such as ke.downstream.TaskSet; got {type(tasks).__name__}.")


def micro_batching(cfg: ContinualConfig, processes: int) -> tuple[int, int]:
    """(micro_batch_size, accumulation steps) so that micro x accumulation x processes = batch_size."""
    if cfg.batch_size % processes:
        raise UserError(f"--batch-size ({cfg.batch_size}) must be divisible by the number of processes "
                        f"({processes}).")
    share = cfg.batch_size // processes
    micro = cfg.micro_batch_size or share
    if share % micro:
        raise UserError(f"--batch-size ({cfg.batch_size}) must be divisible by --micro-batch-size ({micro}) x the "
                        f"number of processes ({processes}); pick a divisor of {share} as --micro-batch-size.")
    return micro, share // micro


# ----------------------------------------------------------------------------- schedules (pure)

def injection_group(step: int, cfg: ContinualConfig) -> int | None:
    """Which injection group (1..injections) the batch of update `step` (1-based) gets, or None."""
    if step % cfg.interval:
        return None
    return (step // cfg.interval - 1) % cfg.injections + 1


def is_eval_step(step: int, cfg: ContinualConfig) -> bool:
    """Evaluate at step 0 (θ_PT), after every eval interval's update and after the final update."""
    return step % cfg.eval_interval == 0 or step == cfg.total_steps


def step_lr(step: int, cfg: ContinualConfig) -> float:
    """Learning rate of update `step` (1-based, OLMo's count): floor x lr at the final step."""
    return Schedule(cfg.lr, cfg.total_steps, cfg.warmup_steps, cfg.lr_floor, cfg.warmup_start).lr(step)


def step_temperature(step: int, cfg: ContinualConfig) -> float:
    """Attention temperature during update `step` and at the evaluation after it (App. B.8, official decay)."""
    return temperature_at(step, cfg.total_steps, cfg.attention_temperature, cfg.temperature_decay)


# ----------------------------------------------------------------------------- batches (pure)

def inject(batch_rows, items: list[list[int]], seq_len: int) -> torch.Tensor:
    """Prepend token list items[i] to row i of the global batch and cut the row back to seq_len
    (the official `cat(k, row)[:seq_len]`); rows beyond len(items) are unchanged. Returns a new tensor."""
    rows = torch.as_tensor(batch_rows, dtype=torch.long).clone()
    if len(items) > rows.shape[0]:
        raise UserError(f"An injection has {len(items)} knowledge items but the batch has {rows.shape[0]} rows; "
                        f"raise --batch-size to at least {len(items)}.")
    for i, item in enumerate(items):
        rows[i] = torch.cat([torch.as_tensor(item, dtype=torch.long), rows[i]])[:seq_len]
    return rows


def global_batch(packed, schedule_ids: dict[int, list[list[int]]], step: int,
                 cfg: ContinualConfig) -> tuple[torch.Tensor, int | None]:
    """The batch_size rows of update `step` with its injection group prepended, and the group (or None)."""
    first = ((step - 1) % cfg.steps) * cfg.batch_size  # the same rows in the same order every epoch
    batch = packed[first:first + cfg.batch_size]["input_ids"]
    group = injection_group(step, cfg)
    return (inject(batch, schedule_ids[group], cfg.seq_len) if group is not None else batch), group


def micro_batches(batch: torch.Tensor, rank: int, processes: int, micro_batch_size: int) -> list[torch.Tensor]:
    """Process `rank`'s contiguous share of the global batch, cut into micro-batches in row order."""
    share = batch.shape[0] // processes
    return list(batch[rank * share:(rank + 1) * share].split(micro_batch_size))


# ----------------------------------------------------------------------------- evaluation

def evaluate(model, tokenizer, probe_list: list[Probe], tasks: Tasks | None, cfg: ContinualConfig) -> dict:
    """K (by set and kind) of the probes and the task accuracies with their mean P (None without tasks)."""
    values = probe_log_probs(model, tokenizer, probe_list, batch_size=cfg.eval_batch_size,
                             normalisation=cfg.probe_normalisation)
    k = knowledge_score(values, probe_list)
    accuracies = tasks.evaluate(model, tokenizer, batch_size=2 * cfg.eval_batch_size) if tasks is not None else {}
    accuracies = {name: float(value) for name, value in accuracies.items()}
    return {"K": k["K"], "K_para": k["K_para"], "K_once": k["K_once"], "K_by_kind": k["by_kind"],
            "P": sum(accuracies.values()) / len(accuracies) if accuracies else None, "tasks": accuracies}


def summary(curve: list[dict]) -> dict:
    """K, P at θ_PT (first point) and θ_CL (last point), A (overall, per set, per kind) and F."""
    pt, cl = curve[0], curve[-1]

    def a(k_cl, k_pt):
        return acquisition(k_cl, k_pt) if k_cl is not None and k_pt is not None else None

    return {"K_PT": pt["K"], "K_CL": cl["K"], "P_PT": pt["P"], "P_CL": cl["P"],
            "A": a(cl["K"], pt["K"]), "A_para": a(cl["K_para"], pt["K_para"]), "A_once": a(cl["K_once"], pt["K_once"]),
            "F": forgetting(cl["P"], pt["P"]) if pt["P"] else None,
            "K_PT_by_kind": pt["K_by_kind"], "K_CL_by_kind": cl["K_by_kind"],
            "A_by_kind": {kind: {name: a(cl["K_by_kind"][kind][name], v) for name, v in values.items()}
                          for kind, values in pt["K_by_kind"].items()},
            "tasks_PT": pt["tasks"], "tasks_CL": cl["tasks"]}


# ----------------------------------------------------------------------------- setup

@dataclass
class Run:
    """What one continual-learning run holds while it trains (built by `setup`)."""
    cfg: ContinualConfig
    key: dict
    out_dir: Path
    accelerator: Any
    model: Any                      # as prepared by accelerate (DDP- or FSDP-wrapped under `accelerate launch`)
    optimizer: Any
    tokenizer: Any
    packed: Any                     # corpus rows of seq_len tokens, torch format
    schedule_ids: dict[int, list[list[int]]]
    probe_list: list[Probe]
    tasks: Tasks | None
    micro_batch_size: int
    provenance: dict
    step: int = 0                   # updates done
    curve: list[dict] = field(default_factory=list)

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)


def run_key(start, corpus, knowledge: FictionalKnowledge, tasks: Tasks | None, cfg: ContinualConfig,
            revision: str | None) -> dict:
    """What a result depends on. micro_batch_size is left out: it changes memory use, not the update."""
    return normalise({"version": VERSION, "config": config_key(cfg, leave_out=("micro_batch_size",)),
                      "start": str(start), "start_files": fingerprint(start), "revision": revision,
                      "inputs": {"knowledge": knowledge.fingerprint(),
                                 "tasks": tasks.fingerprint() if tasks is not None else None,
                                 "corpus": corpus._fingerprint}})


def tokenize_schedule(knowledge: FictionalKnowledge, tokenizer, cfg: ContinualConfig
                      ) -> tuple[dict[int, list[list[int]]], int]:
    """Injection group -> token lists ending in EOS (as the official pkl), and how many exceed seq_len."""
    schedule = injection_schedule(knowledge, cfg.injections)
    largest = max(len(g) for g in schedule.values())
    if largest > cfg.batch_size:
        raise UserError(f"An injection has {largest} knowledge items but --batch-size is {cfg.batch_size}; "
                        f"raise --batch-size to at least {largest}.")
    eos = tokenizer.eos_token_id
    ids = {k: [t + [eos] for t in tokenizer(texts, add_special_tokens=False)["input_ids"]]
           for k, texts in schedule.items()}
    too_long = sum(len(t) > cfg.seq_len for g in ids.values() for t in g)
    if too_long:
        warnings.warn(f"{too_long} knowledge items are longer than seq_len={cfg.seq_len} tokens and are cut off.")
    return ids, too_long


def pack_corpus(corpus, tokenizer, cfg: ContinualConfig):
    """The corpus packed into rows of seq_len tokens (torch format); at least steps x batch_size rows."""
    import datasets
    was_caching = datasets.is_caching_enabled()
    datasets.disable_caching()  # keep map's cache files out of the corpus folder
    try:
        packed = pack_texts(corpus, tokenizer, cfg.seq_len).with_format("torch")
    finally:
        if was_caching:
            datasets.enable_caching()
    needed = cfg.steps * cfg.batch_size
    if len(packed) < needed:
        raise UserError(f"The corpus packs into {len(packed)} rows of {cfg.seq_len} tokens but --steps x "
                        f"--batch-size needs {needed}; give a larger corpus or fewer steps.")
    return packed


def setup(start, corpus, knowledge: FictionalKnowledge, tasks: Tasks | None, cfg: ContinualConfig, out_dir: Path,
          revision: str | None, key: dict) -> Run:
    """Accelerator, model and tokenizer, tokenized injections, packed corpus, optimizer; resumed if a resume
    state of this key exists in out_dir."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from ke.distributed import state
    from ke.models import load_model

    state()  # joins the launch's processes before accelerate would settle on one
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    micro, accumulation = micro_batching(cfg, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = accumulation  # known once the processes are
    set_seed(cfg.seed)
    loaded = load_model(str(start), revision)
    schedule_ids, too_long = tokenize_schedule(knowledge, loaded.tokenizer, cfg)
    probe_list = probes(knowledge)
    packed = pack_corpus(corpus, loaded.tokenizer, cfg)
    model = loaded.model.to(accelerator.device).train()
    optimizer = build_optimizer(model, cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas), eps=cfg.eps)
    model, optimizer = accelerator.prepare(model, optimizer)
    provenance = {**loaded.provenance, "device": str(accelerator.device), "start": str(start),
                  "ke_version": ke.__version__, "torch": torch.__version__, "processes": accelerator.num_processes,
                  "micro_batch_size": micro, "accumulation": accumulation,
                  "distributed": str(accelerator.distributed_type), "items_longer_than_seq_len": too_long}
    run = Run(cfg, key, out_dir, accelerator, model, optimizer, loaded.tokenizer, packed, schedule_ids, probe_list,
              tasks, micro, provenance)
    load_resume(run)
    return run


# ----------------------------------------------------------------------------- training

def train_update(run: Run, step: int) -> dict:
    """Update `step`: the global batch (injected), this process's micro-batches with accumulated gradients,
    clipping and one optimizer step. Returns the log entry (the loss is the global batch's mean)."""
    cfg, accelerator, model, optimizer = run.cfg, run.accelerator, run.model, run.optimizer
    batch, group = global_batch(run.packed, run.schedule_ids, step, cfg)
    lr = step_lr(step, cfg)
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr
    set_temperature(run, step)
    losses, grad_norm = [], None
    for rows in micro_batches(batch, accelerator.process_index, accelerator.num_processes, run.micro_batch_size):
        rows = rows.to(accelerator.device)
        with accelerator.accumulate(model):  # gradients sync and the optimizer steps on the last micro-batch only
            loss = model(input_ids=rows, labels=rows, use_cache=False).loss
            accelerator.backward(loss)  # divides by the accumulation steps
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    # equal rows and tokens per micro-batch and process: the mean of the means is the global mean
    loss_value = accelerator.reduce(torch.stack(losses).mean(), "mean").item()
    if not math.isfinite(loss_value):
        raise RuntimeError(f"loss became {loss_value} at step {step}; lower --lr.")
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP2: a DTensor
    run.step = step
    return {"step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm), "injected_group": group}


def set_temperature(run: Run, step: int) -> None:
    if run.cfg.attention_temperature != 1.0:
        set_attention_temperature(run.unwrapped, step_temperature(step, run.cfg))


def eval_point(run: Run, losses: list[float]) -> dict:
    """Evaluate K and P after update run.step (every process: a sharded model needs all of them) and append
    the point to the curve; save the resume state between the first and the final update. (Not at step 0:
    nothing to resume yet, and saving a sharded optimizer before its first step would create its state with
    a zero-learning-rate step, shifting AdamW's bias correction.)"""
    step = run.step
    set_temperature(run, step)
    point = {"step": step, **evaluate(run.unwrapped, run.tokenizer, run.probe_list, run.tasks, run.cfg),
             "train_loss": sum(losses) / len(losses) if losses else None,
             "lr": step_lr(step, run.cfg) if step else None}
    run.curve.append(point)
    if 0 < step < run.cfg.total_steps:
        save_resume(run)
    return point


# ----------------------------------------------------------------------------- saving

def save_resume(run: Run) -> None:
    """accelerate's save_state (model, optimizer, RNG; sharded under FSDP) plus the curve, atomically."""
    accelerator, final = run.accelerator, run.out_dir / RESUME_DIR
    tmp = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)  # tied embeddings: torch.save keeps them as they are
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomically({"key": run.key, "step": run.step, "curve": run.curve}, tmp / RESUME_FILE)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()


def load_resume(run: Run) -> None:
    """Continue from the last evaluation of an interrupted run of the same key, if out_dir holds one."""
    folder = run.out_dir / RESUME_DIR
    if not (folder / RESUME_FILE).is_file():
        return
    state = json.loads((folder / RESUME_FILE).read_text())
    if state["key"] != run.key:
        raise UserError(f"--out {run.out_dir} holds an interrupted run of another configuration; "
                        f"use a new --out folder.")
    run.accelerator.load_state(str(folder))
    run.step, run.curve = state["step"], state["curve"]


def open_log(run: Run):
    """The training log, cut back to the resumed step, opened for appending (main process; None elsewhere)."""
    if not run.accelerator.is_main_process:
        return None
    path = run.out_dir / LOG_FILE
    old = path.read_text().splitlines() if path.exists() and run.step > 0 else []
    path.write_text("".join(line + "\n" for line in old if json.loads(line)["step"] <= run.step))
    return open(path, "a")


def save_model(run: Run, folder: Path) -> None:
    """The full weights (gathered from all shards under FSDP) and the tokenizer as a normal checkpoint."""
    state_dict = run.accelerator.get_state_dict(run.model)  # every process takes part in the gather
    if run.accelerator.is_main_process:
        save_folder_atomically(folder, lambda tmp: (run.unwrapped.save_pretrained(tmp, state_dict=state_dict),
                                                    run.tokenizer.save_pretrained(tmp)))


def finish(run: Run, seconds: float) -> dict:
    """Optional final model, result.json (cached under the run's key), resume state removed. Returns the result."""
    result_path = run.out_dir / RESULT_FILE
    if run.cfg.save_model:
        save_model(run, run.out_dir / MODEL_DIR)
    if run.accelerator.is_main_process:
        record = {"config": asdict(run.cfg), "provenance": {**run.provenance, "seconds": seconds},
                  "curve": run.curve, **summary(run.curve)}
        files = [run.out_dir / LOG_FILE] + (files_in(run.out_dir / MODEL_DIR) if run.cfg.save_model else [])
        write_cached(record, result_path, run.key, files=files)  # vouching for the log and the saved model
        shutil.rmtree(run.out_dir / RESUME_DIR, ignore_errors=True)
    run.accelerator.wait_for_everyone()
    return read_cached(result_path, run.key)


# ----------------------------------------------------------------------------- the run

def continual_learning(start, corpus, knowledge: FictionalKnowledge, tasks: Tasks | None, cfg: ContinualConfig,
                       out_dir, revision: str | None = None, progress: bool = True, *,
                       stop_after: int | None = None) -> dict | None:
    """Continually train checkpoint `start` (folder or hub id at `revision`) on `corpus` (a Dataset with
    `text`, or a save_to_disk folder) with `knowledge` injected, evaluating K and P (`tasks`: None or an object
    with evaluate(model, tokenizer, batch_size) and fingerprint()) at step 0, every eval interval and at the
    end. Writes out_dir/result.json and train_log.jsonl and returns the result.

    Runs data-parallel or sharded under `accelerate launch`. A finished run with the same inputs is returned
    from result.json; an interrupted one resumes from its last evaluation. `stop_after` ends the loop after
    that step and returns None (tests use it).
    """
    validate(cfg)
    check_tasks_object(tasks)
    out_dir = Path(out_dir)
    corpus = load_corpus(corpus)
    key = run_key(start, corpus, knowledge, tasks, cfg, revision)
    result_path = out_dir / RESULT_FILE
    cached = read_cached(result_path, key)
    if cached is not None:
        return cached
    if result_path.exists():
        raise UserError(f"--out {out_dir} holds a result of another configuration or input; use a new --out folder.")
    out_dir.mkdir(parents=True, exist_ok=True)

    run = setup(start, corpus, knowledge, tasks, cfg, out_dir, revision, key)
    started = time.time()
    if run.step == 0:
        eval_point(run, [])
    last = cfg.total_steps if stop_after is None else min(cfg.total_steps, stop_after)
    bar = tqdm(range(run.step + 1, last + 1), initial=run.step, total=cfg.total_steps,
               disable=not progress or not run.accelerator.is_main_process, desc="continual")
    log, losses = open_log(run), []
    try:
        for step in bar:
            entry = train_update(run, step)
            losses.append(entry["loss"])
            if log:
                log.write(json.dumps(entry) + "\n")
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
            if is_eval_step(step, cfg):
                if log:
                    log.flush()
                eval_point(run, losses)
                losses = []
    finally:
        if log:
            log.close()
    if last < cfg.total_steps:
        return None
    return finish(run, time.time() - started)
