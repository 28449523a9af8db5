"""Downstream tasks through lm-evaluation-harness: P(θ) of Eq. 5 and the forgetting tasks of Sec. 4.1.

P(θ) is the mean zero-shot accuracy over six tasks, each with the metric of OLMo's in-loop evaluator (the one the
paper used): SciQ, Winogrande and ARC-Easy by accuracy, PIQA, OpenBookQA and HellaSwag by "len_norm" (summed
log-likelihood of the continuation divided by its length in characters, which is lm-eval's `acc_norm`). Here the
scoring engine is lm-eval (`lm_eval.models.huggingface.HFLM` around the model already in memory), and the
project's own multiple-choice tasks are lm-eval tasks too (`write_local_task`), so one scorer serves the
generated world and the real benchmarks.

lm-eval is imported only inside the functions that need it (its import takes seconds).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ke.errors import UserError
from ke.storage import digest, fingerprint, write_text_atomically

# The paper's six tasks (Sec. 4.1, Eq. 5) by their lm-eval names, with OLMo's metric for each.
PAPER_TASKS = ("sciq", "winogrande", "piqa", "openbookqa", "hellaswag", "arc_easy")
PAPER_METRICS = {"sciq": "acc", "winogrande": "acc", "piqa": "acc_norm", "openbookqa": "acc_norm",
                 "hellaswag": "acc_norm", "arc_easy": "acc"}
# lm-eval metric names; "len_norm" (OLMo's name) is lm-eval's acc_norm
METRICS = ("acc", "acc_norm")
ALIASES = {"len_norm": "acc_norm"}


def metric_name(metric: str) -> str:
    """The lm-eval name of a task metric ("acc", "acc_norm"; "len_norm" is accepted for acc_norm)."""
    name = ALIASES.get(metric, metric)
    if name not in METRICS:
        raise UserError(f"A task metric must be one of acc, acc_norm or len_norm; got {metric!r}.")
    return name


@dataclass(frozen=True)
class TaskSet:
    """Zero-shot multiple-choice tasks scored by lm-eval; P(θ) is the mean of what `evaluate` returns.

    names: lm-eval task names (`lm-eval ls tasks` lists them), or names of local tasks under `include_path`.
    metrics: one metric per name ("acc" or "acc_norm"); None: the paper's metric for the paper's six tasks
      and, for any other task, the first metric its YAML lists (`write_local_task` lists the chosen one first).
    include_path: folder of local task YAMLs (see `write_local_task`).
    limit: score only the first `limit` documents of each task (None: all).
    num_fewshot: examples in the prompt (the paper: 0).
    validation: score the validation split of every task that has one, as OLMo's evaluator did (lm-eval's
      own default is the test split where it has labels: SciQ, OpenBookQA, ARC-Easy); False: lm-eval's split.

    The default is the paper's six tasks. Their data come from the Hugging Face hub: the first evaluation
    downloads them once into the HF datasets cache (~/.cache/huggingface/datasets, or HF_DATASETS_CACHE);
    later ones read the cache (set HF_DATASETS_OFFLINE=1 to forbid the network).
    """
    names: tuple[str, ...] = PAPER_TASKS
    metrics: tuple[str, ...] | None = None
    include_path: str | None = None
    limit: int | None = None
    num_fewshot: int = 0
    validation: bool = True

    def __post_init__(self):
        object.__setattr__(self, "names", (self.names,) if isinstance(self.names, str) else tuple(self.names))
        if isinstance(self.metrics, str):
            object.__setattr__(self, "metrics", (self.metrics,))
        if not self.names or len(set(self.names)) != len(self.names):
            raise UserError(f"Task names must be given once each and at least one; got {list(self.names)}.")
        if self.metrics is not None:
            metrics = tuple(metric_name(m) for m in self.metrics)
            if len(metrics) != len(self.names):
                raise UserError(f"Give one metric per task: {len(self.names)} tasks but {len(metrics)} metrics.")
            object.__setattr__(self, "metrics", metrics)
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise UserError(f"The task limit must be a positive number of documents or None; got {self.limit!r}.")
        if not isinstance(self.num_fewshot, int) or self.num_fewshot < 0:
            raise UserError(f"num_fewshot must be a non-negative integer; got {self.num_fewshot!r}.")
        if self.include_path is not None:
            object.__setattr__(self, "include_path", str(Path(self.include_path).expanduser().resolve()))

    def fingerprint(self) -> str:
        """Changes with the task list, metrics, limit, shots, split, any file under include_path and the lm-eval
        version (whose task definitions change between releases)."""
        from importlib.metadata import version
        return digest({"names": self.names, "metrics": self.metrics, "limit": self.limit,
                       "num_fewshot": self.num_fewshot, "validation": self.validation,
                       "local": fingerprint(self.include_path) if self.include_path else None,
                       "lm_eval": version("lm_eval")})

    def evaluate(self, model, tokenizer, batch_size: int = 32, progress: bool = False) -> dict[str, float]:
        """Accuracy in percent per task name, of the model as it is in memory (its training mode is kept).

        progress=False keeps lm-eval quiet: its logging below ERROR and its progress bars are dropped."""
        with _quiet(not progress), _random_state_kept():
            from lm_eval.evaluator import evaluate
            from lm_eval.models.huggingface import HFLM

            tasks = self._load_tasks()
            metrics = self._resolve_metrics(tasks)
            was_training = model.training
            try:
                # no special tokens added to the text, as OLMo's evaluator; log-softmax in float32 for bf16 models
                lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=False,
                          softmax_dtype="float32")
                results = evaluate(lm=lm, task_dict=tasks, limit=self.limit, bootstrap_iters=0, log_samples=False)
            finally:
                model.train(was_training)  # HFLM puts the model in eval mode
        return {name: 100.0 * results["results"][name][f"{metric},none"]
                for name, metric in zip(self.names, metrics)}

    def _load_tasks(self) -> dict:
        """lm-eval's task dict for `names`, configured for this set (shots, split)."""
        if self.include_path is not None and not Path(self.include_path).is_dir():
            raise UserError(f"The task folder {self.include_path} does not exist; write its tasks with "
                            f"write_local_task or give an existing include_path.")
        # the local folder alone is indexed in a millisecond; lm-eval's few thousand built-in YAMLs take 5-20 s
        files = fingerprint(self.include_path) if self.include_path else None
        manager = _task_manager(self.include_path, files, defaults=False) if self.include_path else None
        if manager is None or not set(self.names) <= set(manager.all_subtasks):
            manager = _task_manager(self.include_path, files, defaults=True)
        for name in self.names:
            if name in manager.all_groups or name in manager.all_tags:
                raise UserError(f"lm-eval's {name!r} is a group of tasks; name its tasks one by one "
                                f"(`lm-eval ls tasks` lists them).")
            if name not in manager.all_subtasks:
                raise UserError(f"lm-eval knows no task {name!r}; check the name with `lm-eval ls tasks` or give "
                                f"include_path for a local task.")
        tasks = manager.load(list(self.names))
        for task in tasks["tasks"].values():
            task.set_config(key="num_fewshot", value=self.num_fewshot)
            task.set_fewshot_seed(seed=1234)  # lm-eval's default few-shot seed; unused at 0 shots
            if self.validation and task.has_validation_docs():
                task.set_config(key="test_split", value=None)  # lm-eval scores the test split when there is one
        return tasks

    def _resolve_metrics(self, tasks: dict) -> tuple[str, ...]:
        metrics = []
        for i, name in enumerate(self.names):
            reported = list(tasks["tasks"][name].aggregation())
            if self.metrics is not None:
                metric = self.metrics[i]
            else:
                metric = PAPER_METRICS.get(name) or next((m for m in reported if m in METRICS), reported[0])
            if metric not in reported:
                raise UserError(f"lm-eval's task {name!r} reports no {metric!r} (it reports {reported}); choose "
                                f"one of those as its metric.")
            metrics.append(metric)
        return tuple(metrics)


@lru_cache(maxsize=8)
def _task_manager(include_path: str | None, files: str | None, defaults: bool):
    """lm-eval's index of the tasks in `include_path` (and its built-in ones if `defaults`), built once per state
    of the folder: `files` (the folder's fingerprint) only keys the cache."""
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=include_path, include_defaults=defaults)


@contextlib.contextmanager
def _random_state_kept():
    """Python's, numpy's and torch's random states as they were before (lm-eval draws from Python's `random`
    when it names tasks), so an evaluation inside a training run leaves the run's random stream alone."""
    import numpy as np
    import torch
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


@contextlib.contextmanager
def _quiet(enabled: bool):
    """lm-eval's loggers at ERROR and its progress bars (which go to stderr) dropped, while enabled."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("lm_eval", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def write_local_task(folder, name: str, questions: list[dict], metric: str = "acc") -> Path:
    """Write a zero-shot multiple-choice lm-eval task `name` into `folder`; returns the YAML's path.

    questions: [{"context": str, "choices": [str, ...], "answer": index}]. Each choice is scored as the
    continuation " " + choice after the context (lm-eval's target_delimiter " "), as OLMo's evaluator scores
    its tasks: "acc" by the summed log-likelihood, "len_norm"/"acc_norm" by that divided by the choice's length
    in characters. `metric` is listed first, so it is the task's metric in a TaskSet without metrics.
    Evaluate it with `TaskSet(names=(name,), include_path=folder)`.

    The YAML names the questions file by its absolute path (lm-eval hands it to HF `datasets`, which would
    resolve a relative path against the working directory): write the task again after moving the folder.
    """
    metric = metric_name(metric)
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise UserError(f"A local task name needs letters, digits, '_', '-' or '.' only; got {name!r}.")
    if not questions:
        raise UserError(f"Task {name!r} has no questions; give at least one.")
    for q in questions:
        if not (isinstance(q, dict) and isinstance(q.get("context"), str) and isinstance(q.get("choices"), list)
                and len(q["choices"]) >= 2 and all(isinstance(c, str) and c for c in q["choices"])
                and isinstance(q.get("answer"), int) and 0 <= q["answer"] < len(q["choices"])):
            raise UserError(f"Task {name!r}: every question needs a 'context' string, at least two non-empty "
                            f"'choices' and an 'answer' index into them.")
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    write_text_atomically("".join(json.dumps({"context": q["context"], "choices": q["choices"], "answer": q["answer"]},
                                             ensure_ascii=False) + "\n" for q in questions), data)
    other = "acc_norm" if metric == "acc" else "acc"
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"validation": str(data)}},
        "output_type": "multiple_choice",
        "validation_split": "validation",
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "target_delimiter": " ",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in (metric, other)],
        "metadata": {"version": 1.0},
    }
    path = folder / f"{name}.yaml"
    write_text_atomically(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), path)  # last: complete data
    return path
