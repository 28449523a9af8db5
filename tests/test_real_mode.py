"""The real-scale path, offline: a preset without a generated world whose models are local runs laid out like hub
checkpoints (tiny OLMo and GPT-NeoX models saved at several steps), corpora as .jsonl, the entropy sample as token
ids (what `ke first-batch` writes), the paper's own Fictional Knowledge files and a downstream task through
lm-eval. `ke book` builds every chapter in this mode."""
import json
import random
import shutil
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from conftest import FICTIONAL_KNOWLEDGE, make_texts, require_shared, save_tiny_model
from ke.book.build import build_book, chapter_notebooks
from ke.book.plan import make_plan
from ke.book.presets import load_preset
from ke.downstream import write_local_task
from ke.knowledge import load_fictional_knowledge

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
STEPS = (0, 10, 20, 30)


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def real(tmp_path_factory, tokenizer_dir):
    require_shared(FICTIONAL_KNOWLEDGE, "the paper's Fictional Knowledge files")
    root = tmp_path_factory.mktemp("real")
    for name in ("book", "parameters"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("checkpoints", "*.pyc"))
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, root / name)
    for arch, folder in (("olmo", "olmo-run"), ("gpt_neox", "pythia-run")):
        for step in STEPS:
            save_tiny_model(arch, tokenizer_dir, root / folder / f"step{step}", seed=step)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = make_texts(400, seed=3, min_words=10, max_words=60)
    data = root / "data"
    data.mkdir()
    first_batch = [{"text": t, "input_ids": tokenizer(t)["input_ids"]} for t in texts[:24]]
    spec = {
        "name": "real", "run_dir": "runs/real", "world": None,
        "models": {
            "olmo": {"role": "olmo-1b", "family": "olmo", "label": "tiny OLMo run", "source": str(root / "olmo-run")},
            "pythia": {"role": "pythia-1.4b", "family": "gpt_neox", "label": "tiny GPT-NeoX run",
                       "source": str(root / "pythia-run")}},
        "entropy": {"corpora": {"dolma": jsonl(data / "first_batch.jsonl", first_batch),
                                "pubmed": jsonl(data / "pubmed_sample.jsonl", [{"text": t} for t in texts[24:48]])},
                    "max_docs": 24, "seq_len": 32, "batch_size": 8},
        "continual": {
            "corpora": {"pubmed": jsonl(data / "pubmed.jsonl", [{"text": t} for t in texts[:300]]),
                        "c4": jsonl(data / "c4.jsonl", [{"text": t} for t in texts[100:400]])},
            "knowledge": str(FICTIONAL_KNOWLEDGE),
            "tasks": {"names": ["facts"], "include_path": str(root / "tasks")},
            "entities": False, "starts": {"olmo": [10, 20, 30], "pythia": [10, 30]}, "table_starts": [10, 30],
            "config": {"steps": 2, "batch_size": 100, "seq_len": 32, "injections": 2, "eval_every": 2},
            "settings": {"baseline": {}, "lr_div4": {"lr": 1.0e-4}}},
        "resuscitation": {"factors": [2.0], "ratios": [0.5, 0.9], "temperatures": [2.0], "mids": [20, 30]},
    }
    (root / "parameters" / "real.yaml").write_text(yaml.safe_dump(spec))
    rng = random.Random(0)
    questions = [{"context": " ".join(rng.sample(texts[0].split(), 3)), "choices": ["red river", "blue", "old city"],
                  "answer": rng.randrange(3)} for _ in range(12)]
    write_local_task(root / "tasks", "facts", questions)
    index = build_book("real", root=root, warnings_as_errors=True, progress=False)
    return root, index


def test_every_chapter_builds_without_a_generated_world(real):
    root, index = real
    assert index.exists()
    for notebook in chapter_notebooks(root):
        nb = json.loads((root / "_build" / "stage" / notebook).read_text())
        errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                  if o["output_type"] == "error"]
        assert errors == [], notebook


def test_the_papers_knowledge_and_lm_eval_tasks_were_used(real):
    root, _ = real
    plan = make_plan(load_preset("real", root=root))
    result = json.loads((plan.run("olmo", 30).out_dir / "result.json").read_text())
    assert set(result["tasks_PT"]) == {"facts"} and result["P_PT"] is not None
    by_kind = result["K_PT_by_kind"]
    assert set(by_kind) == {"memorization", "semantic", "composition"}
    # the paper's 70 paraphrase and 60 once paragraphs (two injections of 70 + 30 fill the batch of 100 rows)
    run = plan.run("olmo", 30)
    knowledge = load_fictional_knowledge(run.knowledge)
    assert (len(knowledge.paraphrase), len(knowledge.once)) == (70, 60) and run.config.batch_size == 100
    assert result["provenance"]["items_longer_than_seq_len"] > 0  # 32-token rows cut the paragraphs
    record = json.loads((plan.measurement(plan.checkpoint("olmo", 30)).out_dir / "entropy.json").read_text())
    assert record["provenance"]["input"] == "token_ids" and record["num_docs"] == 24
