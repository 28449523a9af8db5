"""Reading documents for the measurements: a text file, a JSON-lines file, a saved or hub `datasets` data set."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    import torch

LOCAL_SUFFIXES = (".txt", ".jsonl", ".json")


def load_documents(spec: str, max_docs: int | None = None, text_field: str = "text") -> list[str]:
    """Documents from `spec`, in order, at most `max_docs`.

    spec is one of: a `.txt` file (one document per line), a `.jsonl` file (one object with a `text` field per
    line), a folder written by `datasets.Dataset.save_to_disk`, or a Hugging Face data set
    `name[:config][@split]` (streamed, so only `max_docs` documents are read).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        docs = _from_saved_dataset(path, text_field, max_docs)
    elif path.is_file():
        docs = _from_file(path, text_field, max_docs)
    elif spec.endswith(LOCAL_SUFFIXES) or spec.startswith((".", "/", "~")):
        raise UserError(f"data file {spec} does not exist; pass a .txt/.jsonl file, a saved data set folder "
                        "or a hub data set name.")
    else:
        docs = _from_hub(spec, text_field, max_docs)
    docs = [d for d in docs if d and d.strip()]
    if not docs:
        raise UserError(f"data {spec} holds no non-empty documents; pass data with at least one document.")
    return docs[:max_docs] if max_docs else docs


def _from_file(path: Path, text_field: str, max_docs: int | None) -> list[str]:
    if path.suffix == ".txt":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        docs = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[text_field]
            except (json.JSONDecodeError, KeyError, TypeError):
                text = None
            if not isinstance(text, str):
                raise UserError(f"line {number} of {path} is not a JSON object with a {text_field!r} string field; "
                                "fix that line or pass a .txt file.")
            if text.strip():
                docs.append(text)
            if max_docs and len(docs) >= max_docs:
                break
        return docs
    raise UserError(f"data file {path} has an unknown suffix; use .txt (one document per line) or .jsonl.")


def _from_saved_dataset(path: Path, text_field: str, max_docs: int | None) -> list[str]:
    import datasets
    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise UserError(f"folder {path} is not a saved data set; pass a folder written by save_to_disk.") from None
    if text_field not in dataset.column_names:
        raise UserError(f"data set {path} has no {text_field!r} column; its columns are {dataset.column_names}.")
    docs = []
    for text in dataset[text_field]:
        if text and text.strip():
            docs.append(text)
            if max_docs and len(docs) >= max_docs:
                break
    return docs


def _from_hub(spec: str, text_field: str, max_docs: int | None) -> list[str]:
    import datasets
    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    try:
        stream = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
        docs = []
        for row in stream:
            if not (row[text_field] and row[text_field].strip()):
                continue
            docs.append(row[text_field])
            if max_docs and len(docs) >= max_docs:
                break
        return docs
    except KeyError:
        raise UserError(f"hub data set {spec} has no {text_field!r} field.") from None
    except Exception as error:
        raise UserError(f"could not read hub data set {spec} ({type(error).__name__}); check the name "
                        "(name[:config][@split]) and your network, or pass a local file.") from None


def load_corpus(corpus):
    """A training corpus with a `text` column: a `datasets.Dataset`, the folder it was saved to, a `.jsonl` file
    (one {"text": ...} object per line), or a Hugging Face data set `name[:config][@split]` (downloaded once into
    the HF cache; split default train)."""
    import datasets

    if isinstance(corpus, datasets.Dataset):
        data = corpus
    else:
        spec = str(corpus)
        path = Path(spec).expanduser()
        if path.is_dir():
            try:
                data = datasets.load_from_disk(str(path))
            except FileNotFoundError:
                raise UserError(f"--corpus {path} holds no saved data set; pass a folder written by "
                                "Dataset.save_to_disk or a .jsonl file.") from None
            if isinstance(data, datasets.DatasetDict):
                if "train" not in data:
                    raise UserError(f"--corpus {path} is a DatasetDict without a 'train' split; save one Dataset.")
                data = data["train"]
        elif path.suffix in (".jsonl", ".json"):
            if not path.is_file():
                raise UserError(f"--corpus {path} does not exist; pass a .jsonl file of {{\"text\": ...}} lines, a "
                                "saved data set folder or a hub data set name.")
            data = datasets.load_dataset("json", data_files=str(path), split="train")
        elif spec.startswith((".", "/", "~")):
            raise UserError(f"--corpus {path} does not exist; pass a saved data set folder, a .jsonl file or a hub "
                            "data set name.")
        else:
            name, _, split = spec.partition("@")
            name, _, config = name.partition(":")
            try:
                data = datasets.load_dataset(name, config or None, split=split or "train")
            except Exception as error:
                raise UserError(f"could not load corpus {spec} ({type(error).__name__}); check the name "
                                "(name[:config][@split]) and your network, or pass a local file.") from None
    if "text" not in data.column_names:
        raise UserError(f"the corpus {corpus} has no 'text' column (its columns: {data.column_names}); add one.")
    return data


def pad_rows(rows: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to `width` (default: the longest) into (input_ids, attention_mask) tensors."""
    import torch

    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask
