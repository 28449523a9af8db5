"""Fictional Knowledge (Chang et al. 2024, split paraphrase70 / once60 by Kim et al. 2025): loading,
the official injection schedule and the probes (Section 4.1, App. B.1; the official olmo/train.py and
fictional_knowledge/ files)."""
from __future__ import annotations

import hashlib
import json
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ke.errors import UserError

ITEM_KEYS = ("train_context", "paraphrases", "mem_input", "mem_target", "gen_input", "gen_target",
             "hard_gen_input", "hard_gen_target")
# probe kind -> JSON key prefix (the official evaluator labels in olmo/eval)
KINDS = {"memorization": "mem", "semantic": "gen", "composition": "hard_gen"}
SETS = ("paraphrase", "once")
# The paper's file names; a folder may hold other counts (`*_paraphrase<N>.json`, `*_once<N>.json`).
OFFICIAL_FILES = {"paraphrase": "fictional_knowledge_paraphrased_paraphrase70.json",
                  "once": "fictional_knowledge_paraphrased_once60.json"}
_FILE_PATTERN = {s: re.compile(rf"_{s}\d+\.json$") for s in SETS}


@dataclass
class FictionalKnowledge:
    """The injected paragraphs: `paraphrase` items are injected once per injection event (a different version
    each time), `once` items are spread over the events, each injected a single time."""
    paraphrase: list[dict]
    once: list[dict]

    def save(self, folder) -> Path:
        """Write both sets as JSON under the paper's file names; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for s in SETS:
            (folder / OFFICIAL_FILES[s]).write_text(json.dumps(getattr(self, s), ensure_ascii=False, indent=1))
        return folder

    def fingerprint(self) -> str:
        """sha256 of the content (used to key cached results)."""
        blob = json.dumps([self.paraphrase, self.once], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Probe:
    set: str      # "paraphrase" | "once"
    kind: str     # "memorization" | "semantic" | "composition"
    item: int     # index of the paragraph within its set
    input: str
    target: str


def load_fictional_knowledge(source, cache_dir=None) -> FictionalKnowledge:
    """Load the two JSON files from a folder, or from an http(s) URL prefix of such a folder (the paper's
    file names are downloaded once into `cache_dir`, default ~/.cache/ke/fictional_knowledge)."""
    source = str(source)
    if source.startswith(("http://", "https://")):
        folder = _download(source, cache_dir)
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise UserError(f"Fictional-knowledge folder {source} does not exist; give a folder holding "
                            f"*_paraphrase<N>.json and *_once<N>.json.")
    sets = {}
    for s in SETS:
        found = sorted(p for p in folder.iterdir() if _FILE_PATTERN[s].search(p.name))
        if len(found) != 1:
            raise UserError(f"Fictional-knowledge folder {folder} must hold exactly one *_{s}<N>.json file; "
                            f"found {len(found)}.")
        sets[s] = _read_items(found[0])
    return FictionalKnowledge(**sets)


def _download(url: str, cache_dir) -> Path:
    folder = Path(cache_dir or Path.home() / ".cache" / "ke" / "fictional_knowledge")
    folder = folder / hashlib.sha256(url.encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    for name in OFFICIAL_FILES.values():
        target = folder / name
        if target.exists():
            continue
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/" + name, timeout=60) as response:
                data = response.read()
        except OSError as e:
            raise UserError(f"Could not download {name} from {url} ({e}); check the URL or give a local folder.")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return folder


def _read_items(path: Path) -> list[dict]:
    try:
        items = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON ({e}); give the original Fictional Knowledge file.")
    if not isinstance(items, list) or not items:
        raise UserError(f"{path} must hold a non-empty JSON list of items; got {type(items).__name__}.")
    for i, item in enumerate(items):
        missing = [k for k in ITEM_KEYS if not isinstance(item, dict) or k not in item]
        if missing:
            raise UserError(f"{path} item {i} lacks the keys {missing}; every item needs {list(ITEM_KEYS)}.")
        if not isinstance(item["train_context"], str) or not all(
                isinstance(item[k], list) and all(isinstance(x, str) for x in item[k]) for k in ITEM_KEYS[1:]):
            raise UserError(f"{path} item {i}: train_context must be a string and the other keys lists of strings.")
        for prefix in KINDS.values():
            if len(item[f"{prefix}_input"]) != len(item[f"{prefix}_target"]):
                raise UserError(f"{path} item {i}: {prefix}_input and {prefix}_target differ in length.")
    return items


def injection_schedule(fk: FictionalKnowledge, groups: int = 10) -> dict[int, list[str]]:
    """The official schedule (olmo/train.py and fictional_knowledge/paraphrase70-once60split.pkl): injection k = 1..groups holds version k of every paraphrase
    item (version 1 = train_context, version k = paraphrases[k-2]), then the k-th slice of the once items
    (`once[m(k-1):mk]`, m = len(once)/groups; uneven counts are spread as evenly as possible)."""
    if groups < 1:
        raise UserError(f"The number of injections must be at least 1; got {groups}.")
    short = [i for i, item in enumerate(fk.paraphrase) if len(item["paraphrases"]) < groups - 1]
    if short:
        raise UserError(f"{groups} injections need {groups - 1} paraphrases per paraphrase-set item; "
                        f"item {short[0]} has fewer; lower the number of injections.")
    n = len(fk.once)
    schedule = {}
    for k in range(1, groups + 1):
        versions = [item["train_context"] if k == 1 else item["paraphrases"][k - 2] for item in fk.paraphrase]
        once = [item["train_context"] for item in fk.once[(k - 1) * n // groups: k * n // groups]]
        schedule[k] = versions + once
    return schedule


def probes(fk: FictionalKnowledge, per_kind: int = 5) -> list[Probe]:
    """All probes, ordered set -> kind -> item -> probe (the official evaluators take the first 5 per kind)."""
    out = []
    for s in SETS:
        for kind, prefix in KINDS.items():
            for i, item in enumerate(getattr(fk, s)):
                pairs = list(zip(item[f"{prefix}_input"], item[f"{prefix}_target"]))[:per_kind]
                out.extend(Probe(s, kind, i, x, y) for x, y in pairs)
    return out
