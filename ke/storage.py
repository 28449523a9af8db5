"""Everything cached on disk goes through here: writes that an interruption never leaves half done (write to a
temporary name, then rename), and one way to key a cached artifact by what produced it.

A cached JSON artifact (a record) holds its key under "key"; `read_cached(path, key)` returns the record only when
the stored key equals `key`, so a changed input, setting or code version recomputes instead of serving a stale result.

A record may vouch for artifact files beside it (`write_cached(..., files=...)`, called once they are in place): it
stores each one's size and sha256 under "files", and a read checks them. A record whose key matches but whose files
do not (damaged, missing) or that cannot be parsed is deleted with a one-line notice on stderr and read as a miss,
so the artifact is recomputed; a record that is still there after a miss was made by other inputs.

Keys: a key holds what changes the result, never a whole config. `config_key(cfg)` keeps a config's fields whose
value differs from the dataclass default, so adding a field (at a default that keeps the old behaviour) leaves every
existing key unchanged. Each kind of artifact has a VERSION constant in its key: bump it when the meaning of a
result changes (new computation, a changed default) so that old results are recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import MISSING, fields
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


def config_key(cfg, leave_out=()) -> dict:
    """The fields of dataclass `cfg` whose value differs from their default (see the module doc), normalised."""
    changed = {}
    for f in fields(cfg):
        default = f.default if f.default is not MISSING else \
            f.default_factory() if f.default_factory is not MISSING else MISSING
        value = getattr(cfg, f.name)
        if f.name not in leave_out and (default is MISSING or normalise(value) != normalise(default)):
            changed[f.name] = value
    return normalise(changed)


SETTLED_NS = 2_000_000_000
_checked: dict[tuple, dict] = {}   # (path, inode, mtime, size) -> check, of files hashed in this process


def file_check(path) -> dict:
    """Size and sha256 of a file, as a record stores them for each file it vouches for. Hashed once per process
    while the file keeps its inode, mtime and size (a resuscitated checkpoint can be GBs), except one modified in
    the last SETTLED_NS: a rewrite within the same filesystem timestamp tick would keep its mtime."""
    path = Path(path).resolve()
    s = path.stat()
    identity = (str(path), s.st_ino, s.st_mtime_ns, s.st_size)
    if identity not in _checked:
        check = {"size": s.st_size, "sha256": _sha256(path)}
        if time.time_ns() - s.st_mtime_ns < SETTLED_NS:
            return check
        _checked[identity] = check
    return dict(_checked[identity])


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def files_in(folder, *leave_out) -> list[Path]:
    """Every file under `folder` (recursively) but those named in `leave_out` and temporary ones."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in leave_out
                  and not p.name.startswith(".tmp-"))


def _damaged(path: Path, what: Path) -> None:
    print(f"{what} was damaged or missing; recomputing", file=sys.stderr, flush=True)
    path.unlink(missing_ok=True)


def read_cached(path, key) -> dict | None:
    """The JSON record at `path` if it was written with this `key` and the files it vouches for are intact (see
    write_cached), else None; a damaged record (or one vouching for damaged files) is deleted, with a notice."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:  # cut off (written by an older, non-atomic writer) or damaged
        _damaged(path, path)
        return None
    if not isinstance(record, dict) or record.get("key") != normalise(key):
        return None
    for name, check in record.get("files", {}).items():
        file = path.parent / name
        if not file.is_file() or file.stat().st_size != check["size"] or file_check(file) != check:
            _damaged(path, file)
            return None
    return record


def write_cached(record: dict, path, key, files=()) -> dict:
    """Write `record` with its `key` atomically to `path` and return what read_cached will return. `files`: paths
    of the artifact files (already in place, under path's folder) it vouches for; their size and sha256 go with it."""
    path = Path(path)
    folder = path.parent.resolve()
    checks = {Path(f).resolve().relative_to(folder).as_posix(): file_check(f) for f in files}
    record = {**record, "key": normalise(key), "files": checks}
    write_json_atomically(record, path)
    return normalise(record)


def stamp(path) -> tuple | None:
    """Identity of a file as written (inode, mtime, size), or None: equal before and after = nothing was written."""
    path = Path(path)
    if not path.is_file():
        return None
    s = path.stat()
    return s.st_ino, s.st_mtime_ns, s.st_size


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
