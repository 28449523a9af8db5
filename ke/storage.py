"""Everything cached on disk goes through here: writes that an interruption never leaves half done (write to a
temporary name, then rename), and one way to key a cached artifact by what produced it.

A cached JSON artifact holds its key under "key"; `read_cached(path, key)` returns the record only when the
stored key equals `key`, so a changed input, setting or code version recomputes instead of serving a stale result.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


def normalise(key):
    """`key` as it comes back from JSON (tuples become lists, keys strings), so stored and new keys compare equal."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def digest(obj) -> str:
    """sha256 of an object's canonical JSON (for keys that would be too long to store whole)."""
    return hashlib.sha256(json.dumps(normalise(obj), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def fingerprint(spec) -> str | None:
    """Relative name, size and modification time of every file under a local path, hashed (None for a path that
    does not exist here, e.g. a hub id): cheap, and it changes whenever a file is rewritten."""
    path = Path(str(spec)).expanduser()
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns)
             for p in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def read_cached(path, key) -> dict | None:
    """The JSON record at `path` if it was written with this `key` (see write_cached), else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:  # a file from an older, non-atomic writer
        return None
    return record if record.get("key") == normalise(key) else None


def write_cached(record: dict, path, key) -> dict:
    """Write `record` with its `key` atomically to `path` and return what read_cached will return."""
    record = {**record, "key": normalise(key)}
    write_json_atomically(record, path)
    return normalise(record)


@contextmanager
def atomic_path(final):
    """Yield a temporary sibling of `final` to write to; it becomes `final` only if the block finishes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.is_file():
            tmp.unlink()


def write_text_atomically(text: str, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
    write_text_atomically(json.dumps(obj, indent=1), path)
