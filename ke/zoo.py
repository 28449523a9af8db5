"""The offline miniature: generated world -> tokenizer -> models pretrained from scratch, all cached on disk."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .config import Preset
from .models import Checkpoint, list_checkpoints, resolve_checkpoint


def build_zoo(preset: Preset, progress: bool = True, jobs: int = 1) -> None:
    """Generate the world and train every zoo model of the preset, `jobs` models at a time in separate
    processes; finished parts are reused, interrupted training resumes from its last checkpoint."""
    if preset.world is None:
        return
    import datasets

    from .pretrain import PretrainConfig, pretrain, train_tokenizer
    from .world import WorldConfig, write_world

    world = dict(preset.world)
    vocab_size = world.pop("vocab_size", 4096)  # the tokenizer's, not the world's
    write_world(WorldConfig(**world), preset.world_dir, progress=progress)
    tokenizer_dir = preset.zoo_dir / "tokenizer"
    corpora = preset.world_dir / "corpora"

    def texts():
        for role in ("pretrain", "pubmed", "c4"):
            yield from datasets.load_from_disk(str(corpora / role))["text"]

    train_tokenizer(texts(), vocab_size, tokenizer_dir)
    todo = [(PretrainConfig(family=spec.family, **spec.pretrain), corpora / "pretrain", tokenizer_dir,
             preset.zoo_dir / key, progress) for key, spec in preset.models.items() if spec.is_zoo]
    if jobs <= 1:
        for args in todo:
            pretrain(*args)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(pretrain, *args) for args in todo]:
            future.result()


def checkpoints(preset: Preset, key: str) -> list[Checkpoint]:
    """The checkpoints of model `key` that the preset analyses, by step."""
    spec = preset.models[key]
    source = preset.model_source(key)
    if spec.steps is None:
        return list_checkpoints(source)
    return [resolve_checkpoint(source, step) for step in spec.steps]


def final_step(preset: Preset, key: str) -> int:
    spec = preset.models[key]
    return spec.final_step or max(c.step for c in checkpoints(preset, key))


def stage_steps(preset: Preset, key: str) -> dict[str, int]:
    """Initial (~20% of the schedule), mid (~50%) and final checkpoints (footnote 3 of the paper), unless set."""
    spec = preset.models[key]
    if spec.stages:
        return dict(spec.stages)
    steps = [c.step for c in checkpoints(preset, key)]
    last = final_step(preset, key)
    nearest = lambda fraction: min(steps, key=lambda s: abs(s - fraction * last))  # noqa: E731
    return {"initial": nearest(0.2), "mid": nearest(0.5), "final": nearest(1.0)}


def tokenizer_dir(preset: Preset) -> Path:
    return preset.zoo_dir / "tokenizer"
