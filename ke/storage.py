"""Writes that an interruption never leaves half done: write to a temporary name, then rename."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def save_folder_atomically(final, write) -> None:
    """Call write(tmp_folder), then rename it to `final`, so an interrupted save never looks complete."""
    final = Path(final)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def torch_save_atomically(obj, path) -> None:
    import torch
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json_atomically(obj, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
