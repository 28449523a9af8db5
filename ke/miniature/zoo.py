"""The offline miniature's inputs: the generated world and the tokenizer trained on its corpora (cached on disk).
The models themselves are pretraining runs (ke.miniature.pretrain), one per model and seed, planned by the book."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..storage import files_in, read_cached, write_cached
from .pretrain import train_tokenizer
from .world import WorldConfig, write_tasks, write_world

ROLES = ("pretrain", "pubmed", "c4")  # the corpora the tokenizer is trained on


def build_world(config: WorldConfig, vocab_size: int, world_dir, tokenizer_dir, progress: bool = True) -> Path:
    """Generate the world into `world_dir` and train the byte-level BPE tokenizer on its corpora into
    `tokenizer_dir`; both are reused when they exist. Returns the pretraining corpus folder."""
    import datasets

    write_world(config, world_dir, progress=progress)
    write_tasks(world_dir)
    corpora = Path(world_dir) / "corpora"
    key = {"world": json.loads((Path(world_dir) / "world.json").read_text())["key"], "vocab_size": vocab_size}
    marker = Path(tokenizer_dir) / "ke_tokenizer.json"
    if read_cached(marker, key) is None:  # a tokenizer of another world or size: train anew
        shutil.rmtree(tokenizer_dir, ignore_errors=True)

        def texts():
            for role in ROLES:
                yield from datasets.load_from_disk(str(corpora / role))["text"]

        train_tokenizer(texts(), vocab_size, tokenizer_dir)
        write_cached({}, marker, key, files=files_in(tokenizer_dir, marker.name))
    return corpora / "pretrain"
