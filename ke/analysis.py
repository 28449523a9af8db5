"""Per-checkpoint artifacts and their aggregation, as the chapters use them (one artifact per checkpoint,
then aggregate). Everything is cached on disk under the preset's run_dir."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from scipy import stats

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto in a kernel without ipywidgets

from .config import Preset
from .entropy import EntropySettings, load_coefficients, run_entropy
from .models import load_model, quiet_transformers
from .zoo import checkpoints, final_step

quiet_transformers()  # the book's pages show results, not loading bars


def entropy_dir(preset: Preset, key: str, checkpoint_name: str, role: str) -> Path:
    return preset.run_dir / "entropy" / key / checkpoint_name / role


def measure_checkpoint(preset: Preset, key: str, step: int, progress: bool = True) -> dict[str, dict]:
    """Entropy artifacts of one checkpoint: on each corpus; on the Dolma role also attention, next-token and
    ReLU-variant entropy, and the official code's padding-counting variant."""
    checkpoint = next(c for c in checkpoints(preset, key) if c.step == step)
    cfg = preset.entropy
    records, loaded = {}, None
    for role in list(cfg["corpora"]) + ["dolma_count_padding"]:
        full = role == "dolma"
        settings = EntropySettings(seq_len=cfg["seq_len"], batch_size=cfg["batch_size"], attention=full, ntp=full,
                                   relu=full, count_padding=role == "dolma_count_padding")
        out_dir = entropy_dir(preset, key, checkpoint.name, role)
        if loaded is None and not (out_dir / "entropy.json").exists():  # load once, only if something is missing
            loaded = load_model(checkpoint.path, checkpoint.revision, dtype=preset.models[key].dtype,
                                device=cfg.get("device", "cpu"))
        records[role] = run_entropy(checkpoint.path, preset.corpus(role.replace("_count_padding", "")), out_dir,
                                    revision=checkpoint.revision, max_docs=cfg["max_docs"], settings=settings,
                                    dtype=preset.models[key].dtype, device=cfg.get("device", "cpu"),
                                    progress=progress, loaded=loaded)
    if preset.world is not None:
        world_knowledge(preset, key, step, loaded)
    return records


def entropy_rows(preset: Preset, key: str, progress: bool = False) -> list[dict]:
    """One row per checkpoint of model `key`: step, fraction of training, and every measured entropy."""
    last = final_step(preset, key)
    rows = []
    for checkpoint in checkpoints(preset, key):
        records = measure_checkpoint(preset, key, checkpoint.step, progress=progress)
        dolma = records["dolma"]
        row = {"step": checkpoint.step, "name": checkpoint.name, "fraction": checkpoint.step / last,
               "layer_entropy": dolma["layer_entropy"], "attention_entropy": dolma["attention_entropy"],
               "layer_attention_entropy": dolma["layer_attention_entropy"], "ntp_entropy": dolma["ntp_entropy"],
               "relu_entropy": dolma["relu_knowledge_entropy"], "num_layers": dolma["num_layers"],
               "ffn_dim": dolma["ffn_dim"]}
        row.update({f"entropy_{role}": records[role]["knowledge_entropy"] for role in records})
        rows.append(row)
    return rows


def coefficients(preset: Preset, key: str, checkpoint_name: str, role: str = "dolma"):
    return load_coefficients(entropy_dir(preset, key, checkpoint_name, role))


def spearman(rows: list[dict], column: str) -> tuple[float, float]:
    """Spearman rank correlation of `column` with the training step (rho, p-value)."""
    result = stats.spearmanr([r["step"] for r in rows], [r[column] for r in rows])
    return float(result.statistic), float(result.pvalue)


def train_log(preset: Preset, key: str) -> list[dict]:
    """Per-step loss and learning rate of a zoo model (empty for hub models)."""
    path = preset.zoo_dir / key / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def trend(rows: list[dict], column: str, from_fraction: float = 0.0) -> dict:
    """Direction of `column` along training: Spearman rho with the step over checkpoints at or after
    `from_fraction` of the schedule, and a plain-words verdict."""
    kept = [r for r in rows if r["fraction"] >= from_fraction]
    if len(kept) < 3:
        return {"rho": float("nan"), "p": float("nan"), "n": len(kept), "direction": "too few checkpoints"}
    rho, p = spearman(kept, column)
    direction = ("decreases" if rho < 0 else "increases") if p < 0.05 else "has no significant monotone trend"
    return {"rho": rho, "p": p, "n": len(kept), "direction": direction}


def describe_trend(rows: list[dict], column: str, from_fraction: float = 0.0) -> str:
    t = trend(rows, column, from_fraction)
    if t["n"] < 3:
        return t["direction"]
    return f"{t['direction']} (Spearman ρ = {t['rho']:.2f}, p = {t['p']:.2g}, {t['n']} checkpoints)"


def world_knowledge(preset: Preset, key: str, step: int, loaded=None) -> dict:
    """Accuracy of one checkpoint on the generated world's multiple-choice fact tasks (cached)."""
    from .metrics import task_accuracy

    checkpoint = next(c for c in checkpoints(preset, key) if c.step == step)
    path = preset.run_dir / "tasks" / key / checkpoint.name / "tasks.json"
    if path.exists():
        return json.loads(path.read_text())
    tasks = json.loads((preset.world_dir / "tasks.json").read_text())
    loaded = loaded or load_model(checkpoint.path, checkpoint.revision, device=preset.entropy.get("device", "cpu"))
    accuracy = task_accuracy(loaded.model, loaded.tokenizer, tasks)
    record = {"step": step, "accuracy": accuracy, "chance": 1 / len(tasks[0]["questions"][0]["choices"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record
