"""Continual knowledge learning: train a checkpoint on a corpus with fictional knowledge injected, measure A and F.

DIGEST 2 E3, 7.9-7.11. Mechanics, as in the official code:
- the corpus is packed into rows of seq_len tokens and read in a fixed order (no shuffle, drop_last);
  an epoch is the first steps x batch_size rows;
- steps count from 1 (the s-th update is step s, as OLMo counts); update s runs at lr x lr_factor(s)
  (OLMo CosWithWarmup: linear warmup from 0.1 lr, cosine down to 0.1 lr at the final step);
- with interval = steps / injections, the batch of every step s with s % interval == 0 gets injection
  group ((s / interval - 1) mod injections) + 1: item i of the group is prepended to row i and the row is
  cut back to seq_len. With one epoch: steps interval, 2 interval, ..., the last at the final step;
- with several epochs the schedule repeats each epoch (what the official arithmetic
  `(step // interval) % 10 or 10` does when only the duration grows): each group once per epoch;
- evaluation at step 0 (θ_PT), after every eval interval's update, and after the final update.

Data parallel: `accelerate launch --multi_gpu --num_processes N script.py` (or `-m ke.cli continual ...`);
the global batch stays batch_size rows, process r trains on rows [r B/N, (r+1) B/N) of it, so the
result equals one process up to float rounding. On a CPU-only machine add ACCELERATE_USE_CPU=1 (gloo):
`accelerate launch --cpu` alone starts one process unless mpirun is set up.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import ke
from ke.cli import add_config_options, config_from_args
from ke.data import load_corpus
from ke.errors import UserError
from ke.knowledge import FictionalKnowledge, injection_schedule, load_fictional_knowledge, probes
from ke.metrics import (NORMALISATIONS, TASK_METRICS, acquisition, check_tasks, forgetting, knowledge_score,
                        probe_log_probs, task_accuracy)
from ke.storage import save_folder_atomically, torch_save_atomically, write_json_atomically
from ke.train import Schedule, build_optimizer, pack_texts

RESULT_FILE = "result.json"
LOG_FILE = "train_log.jsonl"
RESUME_FILE = "resume_state.pt"
MODEL_DIR = "model"


@dataclass
class ContinualConfig:
    """One continual-learning run. Defaults: the official 1B recipe's shape, shortened (160 steps)."""
    steps: int = 160                  # optimizer updates per epoch (rows read per epoch: steps x batch_size)
    batch_size: int = 32              # global batch in rows, whatever the number of processes
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
    task_metric: str = "acc"          # or "len_norm" (a task's own "metric" key wins)
    attention_temperature: float = 1.0
    temperature_decay: bool = True    # T goes linearly from attention_temperature to 1 over the run
    mixed_precision: str = "no"       # accelerate's: "no" | "bf16" | "fp16"
    save_model: bool = False          # also save the final model to out_dir/model

    @property
    def total_steps(self) -> int:
        return self.steps * self.epochs

    @property
    def interval(self) -> int:
        return self.steps // self.injections

    @property
    def eval_interval(self) -> int:
        return self.eval_every or self.interval


def validate(cfg: ContinualConfig) -> None:
    """Raise UserError naming the first bad field of `cfg`."""
    for name in ("steps", "batch_size", "epochs", "injections", "eval_batch_size"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(cfg, name)}.")
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
    if cfg.task_metric not in TASK_METRICS:
        raise UserError(f"--task-metric must be one of {', '.join(TASK_METRICS)}; got {cfg.task_metric!r}.")
    if cfg.mixed_precision not in ("no", "bf16", "fp16"):
        raise UserError(f"--mixed-precision must be no, bf16 or fp16; got {cfg.mixed_precision!r}.")


# ----------------------------------------------------------------------------- pure pieces

def injection_group(step: int, cfg: ContinualConfig) -> int | None:
    """Which injection group (1..injections) the batch of update `step` (1-based) gets, or None."""
    if step % cfg.interval:
        return None
    return (step // cfg.interval - 1) % cfg.injections + 1


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


def temperature(step: int, cfg: ContinualConfig) -> float:
    """Attention temperature at `step`: T0 at step 0, decaying linearly to 1 at the final step (DIGEST 7.11)."""
    t0 = cfg.attention_temperature
    return t0 - (t0 - 1.0) * step / cfg.total_steps if cfg.temperature_decay else t0


def step_lr(step: int, cfg: ContinualConfig) -> float:
    """Learning rate of update `step` (1-based, OLMo's count): floor x lr at the final step."""
    return Schedule(cfg.lr, cfg.total_steps, round(cfg.warmup_fraction * cfg.total_steps), cfg.lr_floor,
                    cfg.warmup_start).lr(step)


def evaluate(model, tokenizer, probe_list, tasks, cfg: ContinualConfig) -> dict:
    """K (by set and kind) of the probes and the task accuracies with their mean P (None without tasks)."""
    values = probe_log_probs(model, tokenizer, probe_list, batch_size=cfg.eval_batch_size,
                             normalisation=cfg.probe_normalisation)
    k = knowledge_score(values, probe_list)
    accuracies = task_accuracy(model, tokenizer, tasks, batch_size=2 * cfg.eval_batch_size,
                               metric=cfg.task_metric) if tasks else {}
    return {"K": k["K"], "K_para": k["K_para"], "K_once": k["K_once"], "K_by_kind": k["by_kind"],
            "P": sum(accuracies.values()) / len(accuracies) if accuracies else None, "tasks": accuracies}


def _set_temperature(model, value: float, cfg: ContinualConfig) -> None:
    if cfg.attention_temperature != 1.0:
        from ke.resuscitate import set_attention_temperature  # written for the attention-temperature chapter
        set_attention_temperature(model, value)


# ----------------------------------------------------------------------------- inputs

def _read_tasks(path) -> list[dict]:
    try:
        tasks = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--tasks {path} is not a readable JSON file ({e}); give the tasks JSON list.")
    check_tasks(tasks)
    return tasks


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# ----------------------------------------------------------------------------- the run

def continual_learning(start, corpus, knowledge: FictionalKnowledge, tasks: list[dict] | None,
                       cfg: ContinualConfig, out_dir, revision: str | None = None, progress: bool = True, *,
                       stop_after: int | None = None) -> dict | None:
    """Continually train checkpoint `start` (folder or hub id at `revision`) on `corpus` (a Dataset with
    `text`, or a save_to_disk folder) with `knowledge` injected, evaluating K and P at step 0, every
    eval interval and at the end. Writes out_dir/result.json and train_log.jsonl and returns the result.

    Runs data-parallel under `accelerate launch` (each process takes its slice of the global batch).
    A finished run with the same inputs is returned from result.json; an interrupted one resumes from its
    last evaluation. `stop_after` ends the loop after that step and returns None (tests use it).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from ke.models import load_model

    validate(cfg)
    out_dir = Path(out_dir)
    tasks = tasks or []
    check_tasks(tasks)
    corpus = load_corpus(corpus)
    key = {"config": asdict(cfg), "start": str(start), "revision": revision,
           "inputs": {"knowledge": knowledge.fingerprint(), "tasks": _fingerprint(tasks),
                      "corpus": corpus._fingerprint}}
    key = json.loads(json.dumps(key))  # tuples -> lists, as they come back from JSON
    result_path = out_dir / RESULT_FILE
    if result_path.exists():
        result = json.loads(result_path.read_text())
        if {k: result.get(k) for k in key} != key:
            raise UserError(f"--out {out_dir} holds a result of another configuration or input; "
                            f"use a new --out folder.")
        return result

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world:
        raise UserError(f"--batch-size ({cfg.batch_size}) must be divisible by the number of processes ({world}).")
    set_seed(cfg.seed)
    loaded = load_model(str(start), revision)
    model, tokenizer = loaded.model, loaded.tokenizer

    # the knowledge, tokenized once: schedule group -> token lists ending in EOS (as the official pkl)
    schedule = injection_schedule(knowledge, cfg.injections)
    largest = max(len(g) for g in schedule.values())
    if largest > cfg.batch_size:
        raise UserError(f"An injection has {largest} knowledge items but --batch-size is {cfg.batch_size}; "
                        f"raise --batch-size to at least {largest}.")
    eos = tokenizer.eos_token_id
    schedule_ids = {k: [ids + [eos] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
                    for k, texts in schedule.items()}
    too_long = sum(len(ids) > cfg.seq_len for g in schedule_ids.values() for ids in g)
    if too_long:
        warnings.warn(f"{too_long} knowledge items are longer than seq_len={cfg.seq_len} tokens and are cut off.")
    probe_list = probes(knowledge)

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

    # resume state from the last evaluation of an interrupted run
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_path = out_dir / RESUME_FILE
    state = torch.load(resume_path, weights_only=False, map_location="cpu") if resume_path.exists() else None
    if state is not None and state["key"] != key:
        raise UserError(f"--out {out_dir} holds an interrupted run of another configuration; use a new --out folder.")
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(accelerator.device).train()
    optimizer = build_optimizer(model, cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas), eps=cfg.eps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    start_step, curve = 0, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_step, curve = state["step"], state["curve"]

    log_path = out_dir / LOG_FILE
    if accelerator.is_main_process:  # keep the log lines up to the resumed step
        old = log_path.read_text().splitlines() if log_path.exists() and start_step > 0 else []
        log_path.write_text("".join(line + "\n" for line in old if json.loads(line)["step"] <= start_step))

    def eval_point(step: int, losses: list[float]) -> None:
        if accelerator.is_main_process:
            _set_temperature(unwrapped, temperature(step, cfg), cfg)
            point = {"step": step, **evaluate(unwrapped, tokenizer, probe_list, tasks, cfg),
                     "train_loss": sum(losses) / len(losses) if losses else None,
                     "lr": step_lr(step, cfg) if step else None}
            curve.append(point)
            if step < cfg.total_steps:
                torch_save_atomically({"key": key, "step": step, "curve": curve, "optimizer": optimizer.state_dict(),
                                        "model": {k: v.cpu() for k, v in unwrapped.state_dict().items()},
                                        "torch_rng": torch.get_rng_state()}, resume_path)
        accelerator.wait_for_everyone()

    started = time.time()
    if start_step == 0:
        eval_point(0, [])
    rows_per_process = cfg.batch_size // world
    last = cfg.total_steps if stop_after is None else min(cfg.total_steps, stop_after)
    losses = []
    bar = tqdm(range(start_step + 1, last + 1), initial=start_step, total=cfg.total_steps,
               disable=not progress or not accelerator.is_main_process, desc="continual")
    log = open(log_path, "a") if accelerator.is_main_process else None
    try:
        for step in bar:
            first = ((step - 1) % cfg.steps) * cfg.batch_size  # the same rows in the same order every epoch
            batch = packed[first:first + cfg.batch_size]["input_ids"]
            group = injection_group(step, cfg)
            if group is not None:
                batch = inject(batch, schedule_ids[group], cfg.seq_len)
            mine = batch[rank * rows_per_process:(rank + 1) * rows_per_process].to(accelerator.device)
            lr = step_lr(step, cfg)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            _set_temperature(unwrapped, temperature(step, cfg), cfg)
            loss = model(input_ids=mine, labels=mine, use_cache=False).loss
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = accelerator.reduce(loss.detach(), "mean").item()  # equal rows per process: the global mean
            if not math.isfinite(loss_value):
                raise RuntimeError(f"loss became {loss_value} at step {step}; lower --lr.")
            losses.append(loss_value)
            if log:
                log.write(json.dumps({"step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                                      "injected_group": group}) + "\n")
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if step % cfg.eval_interval == 0 or step == cfg.total_steps:
                if log:
                    log.flush()
                eval_point(step, losses)
                losses = []
    finally:
        if log:
            log.close()
    if last < cfg.total_steps:
        return None

    if accelerator.is_main_process:
        result = {**key, "provenance": {**loaded.provenance, "device": str(accelerator.device),
                                        "start": str(start), "ke_version": ke.__version__,
                                        "torch": torch.__version__, "processes": world,
                                        "seconds": time.time() - started,  # since this (resumed?) session began
                                        "items_longer_than_seq_len": too_long},
                  "curve": curve, **summary(curve)}
        if cfg.save_model:
            save_folder_atomically(out_dir / MODEL_DIR, lambda tmp: (unwrapped.save_pretrained(tmp),
                                                               tokenizer.save_pretrained(tmp)))
        write_json_atomically(result, result_path)
        resume_path.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    return json.loads(result_path.read_text())


def summary(curve: list[dict]) -> dict:
    """K, P at θ_PT (first point) and θ_CL (last point), A (overall, per set, per kind) and F."""
    pt, cl = curve[0], curve[-1]

    def a(k_cl, k_pt):
        return acquisition(k_cl, k_pt) if k_cl is not None and k_pt is not None else None

    out = {"K_PT": pt["K"], "K_CL": cl["K"], "P_PT": pt["P"], "P_CL": cl["P"],
           "A": a(cl["K"], pt["K"]), "A_para": a(cl["K_para"], pt["K_para"]), "A_once": a(cl["K_once"], pt["K_once"]),
           "F": forgetting(cl["P"], pt["P"]) if pt["P"] else None,
           "K_PT_by_kind": pt["K_by_kind"], "K_CL_by_kind": cl["K_by_kind"],
           "A_by_kind": {kind: {name: a(cl["K_by_kind"][kind][name], v) for name, v in values.items()}
                         for kind, values in pt["K_by_kind"].items()},
           "tasks_PT": pt["tasks"], "tasks_CL": cl["tasks"]}
    return out


# ----------------------------------------------------------------------------- command line

def add_cli(subparsers) -> None:
    """Register `ke continual`: options mirror ContinualConfig's fields (--steps, --batch-size, --lr, ...)."""
    parser = subparsers.add_parser("continual", help="continual knowledge learning from a checkpoint (A and F)",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("model", help="checkpoint folder or hub id, e.g. allenai/OLMo-1B-hf")
    parser.add_argument("--revision", help="hub branch, tag or commit, e.g. step738020-tokens3094B")
    parser.add_argument("--corpus", required=True, help="folder of a datasets.Dataset with a 'text' column")
    parser.add_argument("--knowledge", required=True,
                        help="folder (or http(s) URL prefix) of *_paraphrase<N>.json and *_once<N>.json")
    parser.add_argument("--tasks", help="JSON list of multiple-choice tasks (without it, P and F are not measured)")
    parser.add_argument("--out", required=True, help="folder for result.json and train_log.jsonl")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_options(parser, ContinualConfig, skip=("betas",), special={
        "eval_every": {"type": int, "default": None, "help": "default: the injection interval"}})
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> None:
    cfg = config_from_args(ContinualConfig, args, skip=("betas",))
    validate(cfg)
    knowledge = load_fictional_knowledge(args.knowledge)
    tasks = _read_tasks(args.tasks) if args.tasks else []
    result = continual_learning(args.model, args.corpus, knowledge, tasks, cfg, args.out, revision=args.revision,
                                progress=not args.no_progress)
    print(json.dumps({k: result[k] for k in ("K_PT", "K_CL", "A", "P_PT", "P_CL", "F")}))
    print(f"wrote {Path(args.out) / RESULT_FILE}")
