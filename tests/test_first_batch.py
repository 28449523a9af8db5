"""The first-batch export on synthetic OLMo-style memmaps and a synthetic Megatron .idx/.bin pair, each checked
against slicing the corpus directly; local files and the same files over HTTP (a local server with ranges)."""
from __future__ import annotations

import hashlib
import http.server
import json
import re
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from ke.errors import UserError
from ke.first_batch import (OlmoData, PythiaData, export_olmo_first_batch, export_pythia_first_batch,
                            meta_path, olmo_data_from_config, read_export)

SEQ = 8          # OLMo chunk size of the synthetic corpus
VOCAB = (3, 110)  # token ids drawn from the tiny tokenizer's ordinary tokens


def sha(ids) -> str:
    return hashlib.sha256(np.asarray(ids, dtype="<u4").tobytes()).hexdigest()


@pytest.fixture()
def olmo_corpus(tmp_path):
    """Two raw uint16 token files (5 chunks + 3 stray tokens, 4 chunks) and a shuffled headerless uint32 order."""
    rng = np.random.default_rng(0)
    a = rng.integers(*VOCAB, size=5 * SEQ + 3).astype("<u2")
    b = rng.integers(*VOCAB, size=4 * SEQ).astype("<u2")
    (tmp_path / "part-0.npy").write_bytes(a.tobytes())
    (tmp_path / "part-1.npy").write_bytes(b.tobytes())
    order = rng.permutation(9).astype("<u4")
    (tmp_path / "global_indices.npy").write_bytes(order.tobytes())
    instances = np.concatenate([a[:5 * SEQ], b]).reshape(-1, SEQ)  # trailing partial chunk of a dropped
    data = OlmoData(str(tmp_path / "global_indices.npy"), [str(tmp_path / "part-0.npy"), str(tmp_path / "part-1.npy")],
                    seq_len=SEQ)
    return data, order, instances


def check_export(out, expected_rows, expected_instances, tokenizer_dir, start=0):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [json.loads(line) for line in Path(out).read_text().splitlines()]
    meta = json.loads(meta_path(out).read_text())
    assert len(rows) == len(expected_rows) == meta["n"]
    for k, (row, ids, instance) in enumerate(zip(rows, expected_rows, expected_instances)):
        assert row["position"] == start + k and row["instance"] == int(instance)
        assert row["input_ids"] == [int(t) for t in ids]
        assert row["sha256"] == sha(ids)
        assert row["text"] == tok.decode([int(t) for t in ids]) and row["text"].strip()
    whole = hashlib.sha256(b"".join(np.asarray(ids, dtype="<u4").tobytes() for ids in expected_rows)).hexdigest()
    assert meta["checksum"] == whole
    return meta


def test_olmo_rows_match_direct_slicing(olmo_corpus, tokenizer_dir, tmp_path):
    data, order, instances = olmo_corpus
    out = tmp_path / "out" / "first_batch.jsonl"
    record = export_olmo_first_batch(data, str(tokenizer_dir), out, n=6)
    meta = check_export(out, instances[order[:6]], order[:6], tokenizer_dir)
    assert record["checksum"] == meta["checksum"]
    assert meta["sources"]["file_instances"] == [5, 4] and meta["sources"]["data_order"] == data.data_order
    # positions 6..8: the second batch of size 3 (start), and every instance reachable
    export_olmo_first_batch(data, str(tokenizer_dir), tmp_path / "later.jsonl", n=3, start=6)
    check_export(tmp_path / "later.jsonl", instances[order[6:9]], order[6:9], tokenizer_dir, start=6)
    assert read_export(out)[0]["checksum"] == meta["checksum"]


def test_olmo_export_is_cached_and_recomputed_on_change(olmo_corpus, tokenizer_dir, tmp_path):
    data, order, instances = olmo_corpus
    out = tmp_path / "first_batch.jsonl"
    export_olmo_first_batch(data, str(tokenizer_dir), out, n=4)
    before = out.stat().st_mtime_ns
    export_olmo_first_batch(data, str(tokenizer_dir), out, n=4)
    assert out.stat().st_mtime_ns == before  # same inputs: served from the sidecar
    new_order = order[::-1].copy()
    Path(data.data_order).write_bytes(new_order.tobytes())
    export_olmo_first_batch(data, str(tokenizer_dir), out, n=4)
    check_export(out, instances[new_order[:4]], new_order[:4], tokenizer_dir)


def test_data_order_written_by_np_save_and_read_from_config(olmo_corpus, tokenizer_dir, tmp_path):
    data, order, instances = olmo_corpus
    np.save(tmp_path / "saved_order.npy", order.astype(np.int64))
    config = tmp_path / "OLMo-tiny.yaml"
    config.write_text("run_name: tiny\nsave_folder: ${path.choose:a,b}\nmodel:\n  max_sequence_length: 8\n"
                      "data:\n  memmap_dtype: uint16\n  paths:\n" + "".join(f"    - {p}\n" for p in data.paths))
    from_config = olmo_data_from_config(str(config), str(tmp_path / "saved_order.npy"))
    assert from_config.paths == data.paths and from_config.seq_len == SEQ
    out = tmp_path / "saved.jsonl"
    export_olmo_first_batch(from_config, str(tokenizer_dir), out, n=5)
    check_export(out, instances[order[:5]], order[:5], tokenizer_dir)


# ------------------------------------------------------------------------------------------------ Pythia

def write_megatron(prefix: Path, sequences: list[np.ndarray], shard_at: int | None = None) -> list[Path]:
    """A Megatron MMapIndexedDataset pair written from the format description (header, sizes, pointers,
    doc index); the .bin optionally split into two byte shards at `shard_at` (mid-token allowed)."""
    blob = b"".join(s.astype("<u2").tobytes() for s in sequences)
    sizes = [len(s) for s in sequences]
    pointers = np.concatenate([[0], np.cumsum(sizes)[:-1]]) * 2
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8))
        f.write(struct.pack("<Q", len(sizes)) + struct.pack("<Q", len(sizes) + 1))
        f.write(np.array(sizes, dtype="<i4").tobytes() + np.array(pointers, dtype="<i8").tobytes())
        f.write(np.arange(len(sizes) + 1, dtype="<i8").tobytes())
    if shard_at is None:
        Path(f"{prefix}.bin").write_bytes(blob)
        return [Path(f"{prefix}.bin")]
    first, second = Path(f"{prefix}-00000-of-00001.bin"), Path(f"{prefix}-00001-of-00001.bin")
    first.write_bytes(blob[:shard_at])
    second.write_bytes(blob[shard_at:])
    return [first, second]


@pytest.fixture()
def pythia_corpus(tmp_path):
    rng = np.random.default_rng(1)
    sequences = [rng.integers(*VOCAB, size=9) for _ in range(7)]
    bins = write_megatron(tmp_path / "document", sequences, shard_at=2 * 9 * 3 + 5)  # shard ends mid-token
    return PythiaData(str(tmp_path / "document.idx"), [str(p) for p in bins]), sequences


def test_pythia_rows_match_the_written_sequences(pythia_corpus, tokenizer_dir, tmp_path):
    data, sequences = pythia_corpus
    out = tmp_path / "pythia.jsonl"
    meta = export_pythia_first_batch(data, str(tokenizer_dir), out, n=5)
    check_export(out, sequences[:5], range(5), tokenizer_dir)
    assert meta["sources"]["sequences"] == 7 and meta["sources"]["seq_lens"] == [9]
    export_pythia_first_batch(data, str(tokenizer_dir), tmp_path / "rest.jsonl", n=3, start=4)
    check_export(tmp_path / "rest.jsonl", sequences[4:7], range(4, 7), tokenizer_dir, start=4)


# ------------------------------------------------------------------------------------------------ over HTTP

class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves a folder with HEAD and single byte-range GET (206), 404 for missing files, 416 past the end."""
    root: Path

    def log_message(self, *args):
        pass

    def _file(self) -> Path | None:
        path = self.root / self.path.lstrip("/")
        return path if path.is_file() else None

    def do_HEAD(self):
        path = self._file()
        self.send_response(200 if path else 404)
        self.send_header("Content-Length", str(path.stat().st_size if path else 0))
        self.end_headers()

    def do_GET(self):
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if match is None:
            body, status = data, 200
        else:
            start, end = int(match.group(1)), int(match.group(2))
            if start >= len(data):
                self.send_error(416)
                return
            body, status = data[start:end + 1], 206
            self.send_response(status)
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        if status == 200:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def serve(tmp_path):
    handler = type("Handler", (RangeHandler,), {"root": tmp_path})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield lambda path: f"http://127.0.0.1:{server.server_address[1]}/{Path(path).relative_to(tmp_path)}"
    server.shutdown()
    server.server_close()


def test_urls_give_the_same_export(olmo_corpus, pythia_corpus, tokenizer_dir, tmp_path, serve):
    data, order, instances = olmo_corpus
    remote = OlmoData(serve(data.data_order), [serve(p) for p in data.paths], seq_len=SEQ)
    local = export_olmo_first_batch(data, str(tokenizer_dir), tmp_path / "local.jsonl", n=6)
    over_http = export_olmo_first_batch(remote, str(tokenizer_dir), tmp_path / "remote.jsonl", n=6, workers=3)
    assert over_http["checksum"] == local["checksum"]
    check_export(tmp_path / "remote.jsonl", instances[order[:6]], order[:6], tokenizer_dir)
    pythia, sequences = pythia_corpus
    remote = PythiaData(serve(pythia.index), [serve(p) for p in pythia.data])
    export_pythia_first_batch(remote, str(tokenizer_dir), tmp_path / "pythia.jsonl", n=6)
    check_export(tmp_path / "pythia.jsonl", sequences[:6], range(6), tokenizer_dir)

    missing = OlmoData(serve(tmp_path / "gone.npy"), data.paths, seq_len=SEQ)
    with pytest.raises(UserError, match=r"data-order file http://.*gone\.npy cannot be read \(HTTP 404\).*taken down"):
        export_olmo_first_batch(missing, str(tokenizer_dir), tmp_path / "x.jsonl", n=2)
    Path(pythia.data[1]).write_bytes(Path(pythia.data[1]).read_bytes()[:4])  # the server's copy is cut short
    with pytest.raises(UserError, match="is truncated"):
        export_pythia_first_batch(remote, str(tokenizer_dir), tmp_path / "cut.jsonl", n=6)


def test_unreachable_host_names_the_file(olmo_corpus, tokenizer_dir, tmp_path):
    data, _, _ = olmo_corpus
    unreachable = OlmoData("http://127.0.0.1:9/global_indices.npy", data.paths, seq_len=SEQ)
    with pytest.raises(UserError, match=r"data-order file http://127\.0\.0\.1:9/global_indices\.npy is "
                                        r"unreachable .*taken down before.*local copy"):
        export_olmo_first_batch(unreachable, str(tokenizer_dir), tmp_path / "x.jsonl", n=2)


# ------------------------------------------------------------------------------------------------ errors

def test_missing_files(olmo_corpus, pythia_corpus, tokenizer_dir, tmp_path):
    data, _, _ = olmo_corpus
    gone = OlmoData(data.data_order, [data.paths[0], str(tmp_path / "part-9.npy")], seq_len=SEQ)
    with pytest.raises(UserError, match=r"data file .*part-9\.npy does not exist; pass the path of a local copy"):
        export_olmo_first_batch(gone, str(tokenizer_dir), tmp_path / "x.jsonl", n=2)
    gone = OlmoData(str(tmp_path / "nope.npy"), data.paths, seq_len=SEQ)
    with pytest.raises(UserError, match=r"data-order file .*nope\.npy does not exist"):
        export_olmo_first_batch(gone, str(tokenizer_dir), tmp_path / "x.jsonl", n=2)
    pythia, _ = pythia_corpus
    with pytest.raises(UserError, match=r"index file .*missing\.idx does not exist"):
        export_pythia_first_batch(PythiaData(str(tmp_path / "missing.idx"), pythia.data), str(tokenizer_dir),
                                  tmp_path / "x.jsonl", n=2)
    assert not (tmp_path / "x.jsonl").exists() and not meta_path(tmp_path / "x.jsonl").exists()


def test_truncated_files(olmo_corpus, pythia_corpus, tokenizer_dir, tmp_path):
    data, order, _ = olmo_corpus
    Path(data.data_order).write_bytes(order[:4].tobytes())
    with pytest.raises(UserError, match=r"data-order file .* holds 4 indices but positions 0\.\.5"):
        export_olmo_first_batch(data, str(tokenizer_dir), tmp_path / "x.jsonl", n=6)
    pythia, _ = pythia_corpus
    Path(pythia.data[1]).write_bytes(Path(pythia.data[1]).read_bytes()[:-3])  # last sequence cut short
    export_pythia_first_batch(pythia, str(tokenizer_dir), tmp_path / "ok.jsonl", n=6)  # sequences 0..5 intact
    with pytest.raises(UserError, match=r"data file .*00001-of-00001\.bin is truncated: .*sequence 6"):
        export_pythia_first_batch(pythia, str(tokenizer_dir), tmp_path / "x.jsonl", n=7)
    idx = Path(pythia.index)
    idx.write_bytes(idx.read_bytes()[:40])
    with pytest.raises(UserError, match=r"index file .* is truncated"):
        export_pythia_first_batch(pythia, str(tokenizer_dir), tmp_path / "y.jsonl", n=2)


def test_index_beyond_the_data(olmo_corpus, pythia_corpus, tokenizer_dir, tmp_path):
    data, order, _ = olmo_corpus
    Path(data.data_order).write_bytes(np.array([3, 9, 1], dtype="<u4").tobytes())  # 9 instances: 0..8
    with pytest.raises(UserError, match=r"data-order index 9 \(position 1\) is beyond the 9 instances"):
        export_olmo_first_batch(data, str(tokenizer_dir), tmp_path / "x.jsonl", n=3)
    Path(data.data_order).write_bytes(np.array([8, 0, 1], dtype="<u4").tobytes())
    Path(data.paths[1]).write_bytes(Path(data.paths[1]).read_bytes()[:-1])  # a truncated last file: 8 instances
    with pytest.raises(UserError, match=r"index 8 \(position 0\) is beyond the 8 instances .*untruncated"):
        export_olmo_first_batch(data, str(tokenizer_dir), tmp_path / "x.jsonl", n=3)
    pythia, _ = pythia_corpus
    with pytest.raises(UserError, match=r"lists 7 sequences but positions 5\.\.7"):
        export_pythia_first_batch(pythia, str(tokenizer_dir), tmp_path / "x.jsonl", n=3, start=5)
    with pytest.raises(UserError, match="not a Megatron"):
        bad = tmp_path / "bad.idx"
        bad.write_bytes(b"NOTANIDX" + bytes(40))
        export_pythia_first_batch(PythiaData(str(bad), pythia.data), str(tokenizer_dir), tmp_path / "x.jsonl", n=1)


def test_bad_settings(olmo_corpus, tokenizer_dir, tmp_path):
    data, _, _ = olmo_corpus
    with pytest.raises(UserError, match="--num must be a positive integer"):
        export_olmo_first_batch(data, str(tokenizer_dir), tmp_path / "x.jsonl", n=0)
    with pytest.raises(UserError, match="--out .* must end in .jsonl"):
        export_olmo_first_batch(data, str(tokenizer_dir), tmp_path / "x.json", n=2)
    with pytest.raises(UserError, match="--dtype 'float32' is not an integer"):
        export_olmo_first_batch(OlmoData(data.data_order, data.paths, SEQ, "float32"), str(tokenizer_dir),
                                tmp_path / "x.jsonl", n=2)
    out = tmp_path / "ok.jsonl"
    export_olmo_first_batch(data, str(tokenizer_dir), out, n=2)
    rows = out.read_text().splitlines()
    first = json.loads(rows[0])
    first["input_ids"][0] += 1
    out.write_text("\n".join([json.dumps(first), *rows[1:]]) + "\n")
    with pytest.raises(UserError, match="does not match its sha256"):
        read_export(out)
