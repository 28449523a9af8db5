"""The real-scale path, offline, once per real preset of parameters/ (olmo-1b, olmo-7b, pythia-1.4b): the shipped
file's models, roles and sections, with every source replaced by a tiny local run laid out like hub checkpoints
(tiny OLMo and GPT-NeoX models saved at several steps), corpora as .jsonl, the entropy sample as token ids (what
`ke first-batch` writes), the paper's own Fictional Knowledge files and a downstream task through lm-eval. Steps
map onto the tiny runs by their fraction of the schedule and long lists keep their ends, so that the three books
stay small. `ke book` builds every chapter of each."""
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
REAL = ("olmo-1b", "olmo-7b", "pythia-1.4b")
TINY = {"steps": 2, "batch_size": 100, "micro_batch_size": None, "seq_len": 32, "injections": 2, "eval_every": 2,
        "eval_batch_size": 16, "mixed_precision": "no"}


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def make_project(root: Path, tokenizer_dir: Path) -> dict:
    """The book's sources, one tiny local run per family, the corpora and a local lm-eval task under `root`;
    returns the local stand-in of every source (model family or corpus role -> path)."""
    for name in ("book", "parameters"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("checkpoints", "*.pyc"))
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, root / name)
    for arch in ("olmo", "gpt_neox"):
        for step in STEPS:
            save_tiny_model(arch, tokenizer_dir, root / f"{arch}-run" / f"step{step}", seed=step)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = make_texts(400, seed=3, min_words=10, max_words=60)
    data = root / "data"
    data.mkdir()
    rng = random.Random(0)
    questions = [{"context": " ".join(rng.sample(texts[0].split(), 3)), "choices": ["red river", "blue", "old city"],
                  "answer": rng.randrange(3)} for _ in range(12)]
    write_local_task(root / "tasks", "facts", questions)
    first_batch = [{"text": t, "input_ids": tokenizer(t)["input_ids"]} for t in texts[:16]]
    return {"olmo": str(root / "olmo-run"), "gpt_neox": str(root / "gpt_neox-run"),
            "dolma": jsonl(data / "first_batch.jsonl", first_batch),
            "pubmed": jsonl(data / "pubmed_sample.jsonl", [{"text": t} for t in texts[24:40]]),
            "c4": jsonl(data / "c4_sample.jsonl", [{"text": t} for t in texts[40:56]]),
            "pubmed_continual": jsonl(data / "pubmed.jsonl", [{"text": t} for t in texts[:300]]),
            "c4_continual": jsonl(data / "c4.jsonl", [{"text": t} for t in texts[100:400]])}


def ends(values: list) -> list:
    """A list cut to its first and last distinct values (the books stay small; a trend still has two ends)."""
    values = list(dict.fromkeys(values))
    return values if len(values) <= 2 else [values[0], values[-1]]


def shrink(spec: dict, local: dict, root: Path) -> dict:
    """The shipped preset `spec` with every source replaced by its local stand-in and every step moved onto the
    tiny runs by its fraction of the schedule; the same models, roles and sections."""
    spec = json.loads(json.dumps(spec))
    finals = {}

    def tiny(key, step):
        return min(STEPS, key=lambda s: abs(s - STEPS[-1] * step / finals[key]))

    for key, model in spec["models"].items():
        finals[key] = model.get("final_step") or max(model["steps"])
        steps = list(dict.fromkeys(tiny(key, s) for s in model["steps"]))
        model.update(source=local[model["family"]], steps=steps, final_step=STEPS[-1])
        if "stages" in model:
            model["stages"] = {stage: tiny(key, s) for stage, s in model["stages"].items()}
    spec["name"] = f"real-{spec['name']}"
    spec["run_dir"] = f"runs/{spec['name']}"
    spec["entropy"].update(corpora={role: local[role] for role in spec["entropy"]["corpora"]}, max_docs=16,
                           seq_len=32, batch_size=8, device="cpu")
    c = spec["continual"]
    primary = next((k for k, m in spec["models"].items() if m["role"] == "olmo-1b"), next(iter(spec["models"])))
    c.update(corpora={role: local[f"{role}_continual"] for role in c["corpora"]}, knowledge=str(FICTIONAL_KNOWLEDGE),
             tasks={"names": ["facts"], "include_path": str(root / "tasks")}, config={**c["config"], **TINY},
             starts={k: ends([tiny(k, s) for s in v]) for k, v in c["starts"].items()})
    if "table_starts" in c:
        c["table_starts"] = ends([tiny(primary, s) for s in c["table_starts"]])
    # the settings' batch and step counts are the paper's: they keep their names and learning rates
    if "settings" in c:
        c["settings"] = {name: {k: v for k, v in over.items() if k == "lr"} for name, over in c["settings"].items()}
    if "resuscitation" in spec:
        r = spec["resuscitation"]
        key = r.get("model") or primary
        r.update(final=tiny(key, r["final"]), mids=[tiny(key, r["mids"][0])], starts=ends([tiny(key, s) for s in r["starts"]]),
                 factors=ends(r["factors"]), ratios=ends(r["ratios"]), temperatures=r["temperatures"][:1])
    return spec


@pytest.fixture(scope="module")
def project(tmp_path_factory, tokenizer_dir):
    require_shared(FICTIONAL_KNOWLEDGE, "the paper's Fictional Knowledge files")
    root = tmp_path_factory.mktemp("real")
    return root, make_project(root, tokenizer_dir)


def pages(root: Path) -> dict[str, dict]:
    """Every executed chapter of the last build: notebook -> its error outputs and the text it shows."""
    out = {}
    for notebook in chapter_notebooks(root):
        cells = [c for c in json.loads((root / "_build" / "stage" / notebook).read_text())["cells"]
                 if c["cell_type"] == "code"]
        outputs = [o for c in cells for o in c.get("outputs", [])]
        text = "".join("".join(o.get("data", {}).get("text/markdown", "")) + "".join(o.get("text", ""))
                       for o in outputs)
        out[notebook] = {"errors": [o for o in outputs if o["output_type"] == "error"], "text": text,
                         "figures": sum("image/png" in o.get("data", {}) for o in outputs)}
    return out


@pytest.fixture(scope="module", params=REAL)
def real(request, project):
    root, local = project
    shipped = yaml.safe_load((ROOT / "parameters" / f"{request.param}.yaml").read_text())
    spec = shrink(shipped, local, root)
    (root / "parameters" / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    index = build_book(spec["name"], root=root, warnings_as_errors=True, progress=False)
    return root, spec, index, pages(root)


def test_every_chapter_builds_from_every_real_presets_shape(real):
    root, spec, index, built = real
    assert index.exists()
    for notebook, page in built.items():
        assert page["errors"] == [], notebook
    shipped = yaml.safe_load((ROOT / "parameters" / f"{spec['name'][len('real-'):]}.yaml").read_text())
    assert {k: m["role"] for k, m in spec["models"].items()} == {k: m["role"] for k, m in shipped["models"].items()}
    assert set(spec) == set(shipped)


def test_a_chapter_says_what_its_preset_lacks(real):
    root, spec, _, built = real
    roles = {m["role"] for m in spec["models"].values()}
    resuscitation = built["book/resuscitation.ipynb"]["text"]
    assert ("has no resuscitation section" in resuscitation) == ("resuscitation" not in spec)
    assert (built["book/resuscitation.ipynb"]["figures"] > 0) == ("resuscitation" in spec)
    for chapter in ("continual", "entropy"):  # and the rest of the chapter is shown
        page = built[f"book/{chapter}.ipynb"]
        assert ("has no OLMo-1B role" in page["text"]) == ("olmo-1b" not in roles) and page["figures"] >= 5
    has_c4 = "c4" in spec["continual"]["corpora"]
    assert ("has no c4 continual corpus" in built["book/continual.ipynb"]["text"]) == (not has_c4)


def test_the_papers_knowledge_and_lm_eval_tasks_were_used(real):
    root, spec, _, _ = real
    plan = make_plan(load_preset(spec["name"], root=root))
    model = plan.primary
    step = plan.starts[model][-1]
    run = plan.run(model, step)
    result = json.loads((run.out_dir / "result.json").read_text())
    assert set(result["tasks_PT"]) == {"facts"} and result["P_PT"] is not None
    assert set(result["K_PT_by_kind"]) == {"memorization", "semantic", "composition"}
    # the paper's 70 paraphrase and 60 once paragraphs (two injections of 70 + 30 fill the batch of 100 rows)
    knowledge = load_fictional_knowledge(run.knowledge)
    assert (len(knowledge.paraphrase), len(knowledge.once)) == (70, 60) and run.config.batch_size == 100
    assert result["provenance"]["items_longer_than_seq_len"] > 0  # 32-token rows cut the paragraphs
    record = json.loads((plan.measurement(plan.checkpoint(model, step)).out_dir / "entropy.json").read_text())
    assert record["provenance"]["input"] == "token_ids" and record["num_docs"] == 16
