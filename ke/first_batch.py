"""The entropy sample: the first batch of a model's training order, exported as JSON lines.

Kim et al. (ICLR 2025) measure knowledge entropy on 2k instances of OLMo-1B's first training batch, so every
checkpoint has already seen them (the official `analysis/entropy.py` takes data-order positions 0..2047 and decodes
them with the allenai/OLMo-1B-hf tokenizer). This module reads those instances from the released data-order and token
files (local paths or http(s) URLs, read by byte range: only the needed chunks travel) and writes

  <out>.jsonl       one object per instance: position, instance, sha256, text, input_ids
  <out>.meta.json   the sources, N, the overall checksum and the settings (written last: its presence means done)

Format facts (from the official repositories' files, not from guesses):
- OLMo (allenai/OLMo `olmo/data/iterable_dataset.py`): `global_indices.npy` is a headerless uint32 memmap of
  instance indices despite its suffix; batch b is entries [b*B, (b+1)*B) with B = global_train_batch_size (2048
  for OLMo-1B, `configs/official/OLMo-1B.yaml`). A file written by `np.save` (with a header) is read too.
- OLMo (`olmo/data/memmap_dataset.py`, `olmo/data/__init__.py::build_memmap_dataset`): the corpus is the token
  files of `data.paths` in order (headerless memmaps of `data.memmap_dtype`, default uint16); file f holds
  size_f // (itemsize * chunk) instances (a trailing partial chunk is dropped), chunk = model.max_sequence_length;
  instance i of a file is tokens [i*chunk, (i+1)*chunk); global instance j maps to a file by cumulative counts.
- Pythia (EleutherAI/pythia `utils/mmap_dataset.py`, `utils/batch_viewer.py`, README): the pre-shuffled Pile is a
  Megatron MMapIndexedDataset: `.idx` = magic b"MMIDIDX\\x00\\x00", version (<u8, =1), dtype code (<u1), sequence
  count (<u8), document count (<u8), then int32 sizes, int64 byte pointers into `.bin`, int64 document index.
  Training step s reads sequences [s*1024, (s+1)*1024), each 2049 tokens. The hub copy splits `.bin` into byte
  shards (`document-000NN-of-000MM.bin`, `utils/shard_memmap.py`); pass them in order, as one concatenation.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import json
import struct
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__
from .errors import UserError
from .storage import atomic_path, fingerprint, read_cached, write_cached

FORMAT = "ke-first-batch/1"
# The OLMo-1B run's first-epoch data order (allenai/OLMo README, "Models Overview" table, run 46zc5fly).
OLMO_1B_DATA_ORDER = "https://olmo-checkpoints.org/ai2-llm/olmo-small/46zc5fly/train_data/global_indices.npy"
OLMO_TOKENIZER = "allenai/OLMo-1B-hf"
PYTHIA_TOKENIZER = "EleutherAI/pythia-1.4b"
OLMO_BATCH, PYTHIA_BATCH = 2048, 1024
ORDER_DTYPE = np.dtype("<u4")
IDS_DTYPE = np.dtype("<u4")  # how a row's ids are hashed
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {1: "u1", 2: "i1", 3: "<i2", 4: "<i4", 5: "<i8", 6: "<f4", 7: "<f8", 8: "<u2"}
MEGATRON_HEADER = 9 + 8 + 1 + 8 + 8
TRANSIENT = (TimeoutError, ConnectionResetError, ConnectionAbortedError)
TAKEN_DOWN = "such URLs have been taken down before, so pass the path of a local copy instead"


def ids_sha256(ids) -> str:
    """sha256 of token ids as little-endian uint32 bytes (the per-row checksum of the export)."""
    return hashlib.sha256(np.asarray(ids, dtype=IDS_DTYPE).tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ byte access

def is_url(location: str) -> bool:
    return str(location).startswith(("http://", "https://"))


class Blob:
    """A local file (memory-mapped) or an http(s) URL (range requests), read by byte ranges; `what` names it in
    errors ("data-order file", "data file", ...)."""

    def __init__(self, location: str, what: str, timeout: float = 60.0, retries: int = 3):
        self.location, self.what, self.timeout, self.retries = str(location), what, timeout, retries
        if not is_url(self.location) and not Path(self.location).expanduser().is_file():
            raise UserError(f"{what} {self.location} does not exist; pass the path of a local copy (the official "
                            "download URLs have been taken down before).")

    @cached_property
    def _memmap(self) -> np.memmap | None:
        path = Path(self.location).expanduser()
        return np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else None

    @cached_property
    def size(self) -> int:
        """Length in bytes (a HEAD request, or a one-byte range request where HEAD gives no length)."""
        if not is_url(self.location):
            return Path(self.location).expanduser().stat().st_size
        with self._open("HEAD") as response:
            length = response.headers.get("Content-Length")
        if length is None or response.headers.get("Content-Encoding"):
            with self._open("GET", 0, 1) as response:
                length = response.headers.get("Content-Range", "").rpartition("/")[2]
        if not str(length).isdigit():
            raise UserError(f"{self.what} {self.location} does not report its size; download it and pass the "
                            "local path instead.")
        return int(length)

    def read(self, start: int, length: int, needed_by: str = "") -> bytes:
        """Exactly `length` bytes from byte `start`; a file that ends earlier is reported as truncated."""
        if length == 0:
            return b""
        if is_url(self.location):
            data = self._get(start, length)
        else:
            data = b"" if self._memmap is None else self._memmap[start:start + length].tobytes()
        if len(data) < length:
            have = start + len(data) if data else min(start, self.size)
            raise UserError(f"{self.what} {self.location} is truncated: it ends at byte {have} but "
                            f"{needed_by or 'the export'} needs bytes up to {start + length}; download it again.")
        return data

    def _get(self, start: int, length: int) -> bytes:
        for attempt in range(self.retries):
            try:
                with self._open("GET", start, length) as response:
                    if response.status != 206 and start > 0:
                        raise UserError(f"{self.what} {self.location} ignores HTTP range requests; download it "
                                        "and pass the local path instead.")
                    return response.read(length)
            except (http.client.IncompleteRead, *TRANSIENT) as error:  # the connection dropped mid-body
                if attempt == self.retries - 1:
                    raise UserError(f"{self.what} {self.location} is unreachable ({error!r}); {TAKEN_DOWN}.") from None
                time.sleep(2 ** attempt)

    def _open(self, method: str, start: int | None = None, length: int | None = None):
        request = urllib.request.Request(self.location, method=method,
                                         headers={"User-Agent": f"ke/{__version__}", "Accept-Encoding": "identity"})
        if start is not None:
            request.add_header("Range", f"bytes={start}-{start + length - 1}")
        for attempt in range(self.retries):
            last = attempt == self.retries - 1
            try:
                return urllib.request.urlopen(request, timeout=self.timeout)
            except urllib.error.HTTPError as error:
                if error.code == 416:  # the range starts past the end of the file
                    raise UserError(f"{self.what} {self.location} is truncated: it ends before byte {start}; "
                                    "download it again or pass a complete local copy.") from None
                if error.code < 500 or last:
                    raise UserError(f"{self.what} {self.location} cannot be read (HTTP {error.code}); "
                                    f"{TAKEN_DOWN}.") from None
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                if not isinstance(reason, TRANSIENT) or last:
                    raise UserError(f"{self.what} {self.location} is unreachable ({reason}); {TAKEN_DOWN}.") from None
            time.sleep(2 ** attempt)  # a server error or a dropped connection: try again


class Concatenation:
    """Several blobs read as one byte stream (Pythia's `.bin` shards); a shard's size is asked only when needed."""

    def __init__(self, blobs: list[Blob]):
        self.blobs = blobs

    def read(self, start: int, length: int, needed_by: str = "") -> bytes:
        out, offset = [], 0
        for blob in self.blobs:
            end = offset + blob.size
            if start < end and length > 0:
                take = min(length, end - start)
                out.append(blob.read(start - offset, take, needed_by))
                start, length = start + take, length - take
            offset = end
            if length == 0:
                break
        if length:
            last = self.blobs[-1]
            raise UserError(f"{last.what} {last.location} is truncated: the data ends at byte {offset} but "
                            f"{needed_by or 'the export'} needs bytes up to {start + length}; download it again "
                            "(and pass every shard, in order).")
        return b"".join(out)


def _map(function, items, workers: int, progress: bool, desc: str) -> list:
    """function over items in order, on `workers` threads (URL reads wait on the network, not the CPU)."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(tqdm(pool.map(function, items), total=len(items), desc=desc, disable=not progress))


# ------------------------------------------------------------------------------------------------ a batch

@dataclass
class Batch:
    """Positions start..start+n of a training order: the corpus instance each holds and its exact token ids."""
    kind: str
    positions: list[int]
    instances: list[int]
    rows: list[np.ndarray]
    sources: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ OLMo

@dataclass
class OlmoData:
    """The data of an OLMo (v1) run: its data-order file and the token files of the training config, in order."""
    data_order: str
    paths: list[str]
    seq_len: int = 2048      # model.max_sequence_length = MemMapDataset chunk size
    dtype: str = "uint16"    # data.memmap_dtype

    def check(self):
        if not self.paths:
            raise UserError("no OLMo data files were given; pass the training config (its data.paths) or the "
                            "token files themselves.")
        if self.seq_len <= 0:
            raise UserError(f"--seq-len must be a positive integer; got {self.seq_len}.")
        try:
            kind = np.dtype(self.dtype).kind
        except TypeError:
            kind = None
        if kind not in ("u", "i"):
            raise UserError(f"--dtype {self.dtype!r} is not an integer numpy dtype; OLMo's token files are uint16.")


def olmo_data_from_config(config: str, data_order: str = OLMO_1B_DATA_ORDER) -> OlmoData:
    """OlmoData from an OLMo training config YAML (e.g. configs/official/OLMo-1B.yaml, a local path or URL):
    data.paths (or data.datasets, labels sorted, as build_memmap_dataset does), model.max_sequence_length and
    data.memmap_dtype."""
    import yaml
    blob = Blob(config, "training config")
    try:
        raw = yaml.safe_load(blob.read(0, blob.size, "reading the config").decode("utf-8"))
        data, model = raw.get("data") or {}, raw.get("model") or {}
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError):
        raise UserError(f"training config {config} is not a YAML mapping; pass an OLMo training config such as "
                        "configs/official/OLMo-1B.yaml.") from None
    paths = data.get("paths") or [p for label in sorted(data.get("datasets") or {}) for p in data["datasets"][label]]
    if not paths:
        raise UserError(f"training config {config} has no data.paths or data.datasets; pass the config of the "
                        "training run.")
    return OlmoData(data_order, [str(p) for p in paths], int(model.get("max_sequence_length", 2048)),
                    str(data.get("memmap_dtype", "uint16")))


def read_data_order(location: str, start: int, n: int) -> np.ndarray:
    """Entries [start, start+n) of a data-order file (headerless uint32 as OLMo writes it, or an .npy array)."""
    blob = Blob(location, "data-order file")
    offset, dtype, count = 0, ORDER_DTYPE, blob.size // ORDER_DTYPE.itemsize
    head = blob.read(0, min(blob.size, 6), "the header")
    if head == b"\x93NUMPY":  # written by np.save: parse the header for dtype, shape and where the data start
        stream = io.BytesIO(blob.read(0, min(blob.size, 65536), "the .npy header"))
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        version = np.lib.format.read_magic(stream)
        shape, fortran, dtype = reader.get(version, np.lib.format.read_array_header_2_0)(stream)
        offset, count = stream.tell(), int(np.prod(shape))
        if len(shape) != 1 or dtype.kind not in ("u", "i"):
            raise UserError(f"data-order file {location} holds a {dtype} array of shape {shape}; pass a 1-D integer "
                            "array of instance indices.")
    if start + n > count:
        raise UserError(f"data-order file {location} holds {count} indices but positions {start}..{start + n - 1} "
                        "were asked for; pass a complete copy or a smaller --num/--start.")
    raw = blob.read(offset + start * dtype.itemsize, n * dtype.itemsize, f"positions {start}..{start + n - 1}")
    return np.frombuffer(raw, dtype=dtype).astype(np.int64)


def olmo_instances(data: OlmoData, n: int = OLMO_BATCH, start: int = 0, workers: int = 8,
                   progress: bool = False) -> Batch:
    """Instances at positions [start, start+n) of an OLMo run's training order, read from its token files."""
    data.check()
    _check_range(n, start)
    instances = read_data_order(data.data_order, start, n)
    dtype = np.dtype(data.dtype).newbyteorder("<")
    chunk_bytes = data.seq_len * dtype.itemsize
    blobs = [Blob(path, "data file") for path in data.paths]
    parallel = workers if any(is_url(p) for p in data.paths) else 1
    sizes = _map(lambda blob: blob.size, blobs, parallel, progress, "data file sizes")
    counts = np.array([size // chunk_bytes for size in sizes], dtype=np.int64)
    ends = np.cumsum(counts)
    total = int(ends[-1])
    beyond = [(k, int(j)) for k, j in zip(range(start, start + n), instances) if j >= total]
    if beyond:
        k, j = beyond[0]
        raise UserError(f"data-order index {j} (position {k}) is beyond the {total} instances of the {len(blobs)} "
                        "data files; pass all the data files of that run, in the config's order, untruncated.")
    files = np.searchsorted(ends, instances, side="right")

    def read(item):
        k, j, f = item
        local = j - (int(ends[f]) - int(counts[f]))
        raw = blobs[f].read(local * chunk_bytes, chunk_bytes, f"instance {j} (position {k})")
        return np.frombuffer(raw, dtype=dtype).astype(np.int64)

    items = [(k, int(j), int(f)) for k, j, f in zip(range(start, start + n), instances, files)]
    rows = _map(read, items, parallel, progress, "instances")
    sources = {"data_order": data.data_order, "data_files": list(data.paths), "file_instances": counts.tolist(),
               "files_read": sorted({data.paths[f] for _, _, f in items}), "seq_len": data.seq_len,
               "dtype": data.dtype}
    return Batch("olmo", list(range(start, start + n)), [int(j) for j in instances], rows, sources)


# ------------------------------------------------------------------------------------------------ Pythia

@dataclass
class PythiaData:
    """Pythia's pre-shuffled Pile: the Megatron `.idx` file and its `.bin` (or the `.bin` shards, in order)."""
    index: str
    data: list[str]


def read_megatron_index(index: Blob, start: int, n: int) -> tuple[np.dtype, int, np.ndarray, np.ndarray]:
    """(token dtype, sequence count, sizes, byte pointers) of sequences [start, start+n) of a Megatron `.idx`."""
    header = index.read(0, MEGATRON_HEADER, "the index header")
    magic, version, code, count, _docs = struct.unpack("<9sQBQQ", header)
    if magic != MEGATRON_MAGIC or version != 1 or code not in MEGATRON_DTYPES:
        raise UserError(f"index file {index.location} is not a Megatron MMapIndexedDataset index (version 1); pass "
                        "the .idx file of the pre-shuffled Pile (e.g. document.idx).")
    if start + n > count:
        raise UserError(f"index file {index.location} lists {count} sequences but positions {start}..{start + n - 1} "
                        "were asked for; pass a smaller --num/--start.")
    needed = f"sequences {start}..{start + n - 1}"
    sizes = np.frombuffer(index.read(MEGATRON_HEADER + 4 * start, 4 * n, needed), dtype="<i4").astype(np.int64)
    pointers = np.frombuffer(index.read(MEGATRON_HEADER + 4 * count + 8 * start, 8 * n, needed), dtype="<i8")
    return np.dtype(MEGATRON_DTYPES[code]), count, sizes, pointers.astype(np.int64)


def pythia_instances(data: PythiaData, n: int = PYTHIA_BATCH, start: int = 0, workers: int = 8,
                     progress: bool = False) -> Batch:
    """Sequences [start, start+n) of Pythia's pre-shuffled data (= the training order: step s reads s*1024..)."""
    _check_range(n, start)
    if not data.data:
        raise UserError("no Pythia .bin file was given; pass document.bin or its shards in order.")
    index = Blob(data.index, "index file")
    stream = Concatenation([Blob(path, "data file") for path in data.data])
    dtype, count, sizes, pointers = read_megatron_index(index, start, n)

    def read(k):
        i = k - start
        raw = stream.read(int(pointers[i]), int(sizes[i]) * dtype.itemsize, f"sequence {k}")
        return np.frombuffer(raw, dtype=dtype).astype(np.int64)

    parallel = workers if is_url(data.index) or any(is_url(p) for p in data.data) else 1
    rows = _map(read, list(range(start, start + n)), parallel, progress, "sequences")
    sources = {"index": data.index, "data_files": list(data.data), "sequences": count, "dtype": str(dtype),
               "seq_lens": sorted({int(s) for s in sizes})}
    return Batch("pythia", list(range(start, start + n)), list(range(start, start + n)), rows, sources)


def _check_range(n: int, start: int):
    if n <= 0:
        raise UserError(f"--num must be a positive integer; got {n}.")
    if start < 0:
        raise UserError(f"--start must be a non-negative integer; got {start}.")


# ------------------------------------------------------------------------------------------------ export

def meta_path(out) -> Path:
    """The sidecar of an export: first_batch.jsonl -> first_batch.meta.json."""
    return Path(out).with_suffix(".meta.json")


def export_key(kind: str, sources: dict, files: list[str], n: int, start: int, tokenizer: str,
               skip_special_tokens: bool) -> dict:
    """What an export depends on: a changed input, setting, or local file (name, size, mtime) recomputes it."""
    return {"format": FORMAT, "kind": kind, "sources": sources, "n": n, "start": start, "tokenizer": tokenizer,
            "tokenizer_files": fingerprint(tokenizer), "skip_special_tokens": skip_special_tokens,
            "local_files": {p: fingerprint(p) for p in files if not is_url(p)}}


def write_batch(batch: Batch, tokenizer: str, out, key: dict, skip_special_tokens: bool = False,
                progress: bool = False) -> dict:
    """Decode `batch` with `tokenizer` (a local folder or hub id) and write <out>.jsonl and <out>.meta.json.

    The official script decodes with `batch_decode` defaults, so special tokens (OLMo's <|endoftext|> document
    separators) stay in the text; skip_special_tokens=True drops them."""
    from transformers import AutoTokenizer
    out = Path(out)
    if out.suffix != ".jsonl":
        raise UserError(f"--out {out} must end in .jsonl (the sidecar {out.stem}.meta.json goes next to it).")
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as error:
        raise UserError(f"could not load tokenizer {tokenizer} ({str(error).splitlines()[0][:160]}); pass a local "
                        f"tokenizer folder or a hub id such as {OLMO_TOKENIZER}.") from None
    whole = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as stream:
        for k, j, ids in tqdm(zip(batch.positions, batch.instances, batch.rows), total=len(batch.rows),
                              desc="decoding", disable=not progress):
            whole.update(np.asarray(ids, dtype=IDS_DTYPE).tobytes())
            row = {"position": k, "instance": j, "sha256": ids_sha256(ids),
                   "text": tok.decode(ids.tolist(), skip_special_tokens=skip_special_tokens),
                   "input_ids": ids.tolist()}
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    record = {"format": FORMAT, "kind": batch.kind, "n": len(batch.rows),
              "start": batch.positions[0], "file": out.name, "checksum": whole.hexdigest(),
              "checksum_of": "sha256 of every row's input_ids, in order, as little-endian uint32 bytes "
                             "(a row's sha256 is the same over that row alone)",
              "tokenizer": tokenizer, "skip_special_tokens": skip_special_tokens, "sources": batch.sources,
              "ke_version": __version__}
    return write_cached(record, meta_path(out), key)


def _cached(out, key) -> dict | None:
    record = read_cached(meta_path(out), key)
    return record if record and Path(out).is_file() else None


def export_olmo_first_batch(data: OlmoData, tokenizer: str, out, n: int = OLMO_BATCH, start: int = 0,
                            skip_special_tokens: bool = False, workers: int = 8, progress: bool = False) -> dict:
    """Write OLMo training-order positions [start, start+n) (default: the first batch) to `out` (.jsonl) and
    return the sidecar record; an export with the same inputs and settings is returned without rereading."""
    sources = {"data_order": data.data_order, "data_files": list(data.paths), "seq_len": data.seq_len,
               "dtype": data.dtype}
    key = export_key("olmo", sources, [data.data_order, *data.paths], n, start, tokenizer, skip_special_tokens)
    cached = _cached(out, key)
    if cached:
        return cached
    batch = olmo_instances(data, n, start, workers, progress)
    return write_batch(batch, tokenizer, out, key, skip_special_tokens, progress)


def export_pythia_first_batch(data: PythiaData, tokenizer: str, out, n: int = PYTHIA_BATCH, start: int = 0,
                              skip_special_tokens: bool = False, workers: int = 8, progress: bool = False) -> dict:
    """Write Pythia training-order sequences [start, start+n) (default: the first batch) to `out` (.jsonl)."""
    key = export_key("pythia", {"index": data.index, "data_files": list(data.data)}, [data.index, *data.data], n,
                     start, tokenizer, skip_special_tokens)
    cached = _cached(out, key)
    if cached:
        return cached
    batch = pythia_instances(data, n, start, workers, progress)
    return write_batch(batch, tokenizer, out, key, skip_special_tokens, progress)


def read_export(out) -> tuple[dict, list[dict]]:
    """(sidecar record, rows) of an export, each row's sha256 and the overall checksum verified."""
    out = Path(out)
    if not out.is_file() or not meta_path(out).is_file():
        raise UserError(f"{out} or its sidecar {meta_path(out).name} does not exist; run `ke first-batch` first.")
    record = json.loads(meta_path(out).read_text())
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    whole = hashlib.sha256()
    for row in rows:
        whole.update(np.asarray(row["input_ids"], dtype=IDS_DTYPE).tobytes())
        if ids_sha256(row["input_ids"]) != row["sha256"]:
            raise UserError(f"row {row['position']} of {out} does not match its sha256; export it again.")
    if whole.hexdigest() != record.get("checksum") or len(rows) != record.get("n"):
        raise UserError(f"{out} does not match the checksum in {meta_path(out).name}; export it again.")
    return record, rows
