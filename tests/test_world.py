"""The generated miniature world: determinism, cache, the paper's knowledge schema, probe and task correctness,
fact repetition and the separation of the entity pools. Every check recomputes from the World object or the
written files, not from the generator's own bookkeeping."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import datasets
import pytest

from ke.errors import UserError
from ke.miniature.world import C4_FILLERS, WorldConfig, generate_world, write_world

TINY = WorldConfig(seed=3, num_people=12, num_cities=6, num_countries=4, num_companies=5, num_universities=4,
                   num_occupations=5, num_hobbies=5, pretrain_docs=600, continual_docs=80, num_paraphrase=3,
                   num_once=4, num_versions=10, injection_groups=2, task_questions=30, task_choices=4,
                   first_batch_docs=16)
MIN_MENTIONS = 10   # 540 biographies / 12 people * ~3.5 of 5 facts each: ~30 expected per fact


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return write_world(TINY, tmp_path_factory.mktemp("world") / "w", progress=False)


@pytest.fixture(scope="module")
def world():
    return generate_world(TINY)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def texts(root: Path, role: str) -> list[str]:
    return datasets.load_from_disk(str(root / "corpora" / role))["text"]


def knowledge(root: Path) -> dict[str, list[dict]]:
    out = {}
    for s, n in (("paraphrase", TINY.num_paraphrase), ("once", TINY.num_once)):
        out[s] = json.loads((root / "knowledge" / f"fictional_knowledge_paraphrased_{s}{n}.json").read_text())
    return out


def test_same_config_gives_identical_files_and_another_seed_differs(written, tmp_path):
    again = files(write_world(TINY, tmp_path / "again", progress=False))
    assert again == files(written)
    other = files(write_world(replace(TINY, seed=4), tmp_path / "other", progress=False))
    assert other.keys() == again.keys()
    assert other["corpora/pretrain/data-00000-of-00001.arrow"] != again["corpora/pretrain/data-00000-of-00001.arrow"]
    assert other["tasks.json"] != again["tasks.json"]


def test_cache_skips_rewrite_and_new_config_regenerates(tmp_path):
    out = write_world(TINY, tmp_path / "w", progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    write_world(TINY, out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes
    write_world(replace(TINY, task_questions=7), out, progress=False)
    assert json.loads((out / "world.json").read_text())["config"]["task_questions"] == 7
    assert not [p for p in tmp_path.iterdir() if p.name != "w"]   # no temp folder left behind
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        write_world(TINY, tmp_path / "foreign", progress=False)


def test_invalid_config_is_a_user_error():
    with pytest.raises(UserError, match="num_occupations"):
        generate_world(replace(TINY, num_occupations=500))
    with pytest.raises(UserError, match="num_once"):
        generate_world(replace(TINY, num_once=3))
    with pytest.raises(UserError, match="pubmed_fraction must be in"):
        generate_world(replace(TINY, pubmed_fraction=1.5))
    with pytest.raises(UserError, match="must be below 1"):
        generate_world(replace(TINY, pubmed_fraction=0.5, c4_fraction=0.45))


def test_knowledge_schema_matches_the_papers_data(written, fictional_knowledge):
    ours = knowledge(written)
    for s, paper_file in (("paraphrase", "fictional_knowledge_paraphrased_paraphrase70.json"),
                          ("once", "fictional_knowledge_paraphrased_once60.json")):
        paper = json.loads((fictional_knowledge / paper_file).read_text())
        shape = {k: (len(v) if isinstance(v, list) else type(v).__name__) for k, v in paper[0].items()}
        assert all({k: (len(v) if isinstance(v, list) else type(v).__name__) for k, v in item.items()} == shape
                   for item in paper)   # the paper's own items agree with each other
        for item in ours[s]:
            assert {k: (len(v) if isinstance(v, list) else type(v).__name__) for k, v in item.items()} == shape
            assert all(isinstance(x, str) for k, v in item.items() if isinstance(v, list) for x in v)


def test_fictional_names_never_occur_in_any_corpus(written, world):
    names = json.loads((written / "world.json").read_text())["fictional_names"]
    assert names == [p.name for p in world.fictional]
    assert len(names) == TINY.num_paraphrase + TINY.num_once
    corpus = " ".join(t for role in ("pretrain", "pubmed", "c4") for t in texts(written, role)).lower()
    words = {w.lower() for n in names for w in n.split()}
    assert len(words) == 2 * len(names)   # no shared first or last names
    assert [w for w in words if w in corpus] == []
    familiar = [n for n in (*world.city_country, *world.company_hq, *world.university_city, *world.countries)]
    world_names = {w.lower() for n in familiar + [p.name for p in world.people] for w in n.split()}
    assert not [(f, w) for f in words for w in world_names if f in w or w in f]
    # new combinations of the world's own syllables (consonant-vowel, optional n): no unseen letters
    assert all(re.fullmatch(r"([bdgkmprt][aeiou]n?)+", w) for w in words)
    items = knowledge(written)
    for person, item in zip(world.fictional, items["paraphrase"] + items["once"]):
        assert person.name in item["train_context"]


def test_probes(written, world):
    items = knowledge(written)
    for person, item in zip(world.fictional, items["paraphrase"] + items["once"]):
        context = item["train_context"]
        sentences = re.split(r"(?<=\.) ", context)
        assert 5 <= len(sentences) <= 7
        for prompt, target in zip(item["mem_input"], item["mem_target"]):
            assert any(s == f"{prompt} {target}." for s in sentences)   # a verbatim sentence prefix
        assert item["gen_target"] == item["mem_target"]
        assert all(g not in context for g in item["gen_input"])
        assert all(g != m for g, m in zip(item["gen_input"], item["mem_input"]))
        for kind in ("mem", "gen", "hard_gen"):
            for prompt, target in zip(item[f"{kind}_input"], item[f"{kind}_target"]):
                assert target not in prompt and person.name in prompt
        # the attribute each probe asks for, recomputed from the world's tables
        f = person.facts
        assert sorted(item["mem_target"]) == sorted(f.values())
        expected = [(("born", "country"), world.city_country[f["birth_city"]]),
                    (("company", "headquartered"), world.company_hq[f["employer"]]),
                    (("university", "located in"), world.university_city[f["university"]]),
                    (("company", "field of|business"), world.company_industry[f["employer"]]),
                    (("university", "country"), world.city_country[world.university_city[f["university"]]])]
        for (keywords, value), prompt, target in zip(expected, item["hard_gen_input"], item["hard_gen_target"]):
            assert all(re.search(k, prompt) for k in keywords) and target == value
        versions = [context] + item["paraphrases"]
        assert len(set(versions)) == TINY.num_versions
        for text in versions:   # every version states every fact
            assert person.name in text and all(v in text for v in f.values())


def test_tasks_answer_with_true_world_facts(written, world):
    tasks = json.loads((written / "tasks.json").read_text())
    assert len(tasks) == 6 and len({t["role"] for t in tasks}) == 6
    truth = {"birth_city": lambda p: p.facts["birth_city"], "employer": lambda p: p.facts["employer"],
             "university": lambda p: p.facts["university"], "occupation": lambda p: p.facts["occupation"],
             "company_hq": world.company_hq.__getitem__, "city_country": world.city_country.__getitem__}
    answers = []
    for task in tasks:
        assert len(task["questions"]) == TINY.task_questions
        subjects = (world.people if task["name"] in ("birth_city", "employer", "university", "occupation")
                    else list(world.company_hq) if task["name"] == "company_hq" else list(world.city_country))
        for q in task["questions"]:
            found = [s for s in subjects if (s.name if hasattr(s, "name") else s) in q["context"]]
            assert len(found) == 1, q
            true_value = truth[task["name"]](found[0])
            assert q["choices"][q["answer"]] == true_value
            assert len(set(q["choices"])) == len(q["choices"]) == TINY.task_choices
            assert all(c not in q["context"] for c in q["choices"])
            answers.append(q["answer"])
    counts = [answers.count(i) for i in range(TINY.task_choices)]
    assert min(counts) > 0.6 * len(answers) / TINY.task_choices   # answer position roughly uniform


def test_every_fact_is_repeated_in_the_pretraining_corpus(written, world):
    docs = texts(written, "pretrain")
    assert len(docs) == TINY.pretrain_docs
    assert texts(written, "first_batch") == docs[:TINY.first_batch_docs]
    counts = []
    for p in world.people:
        about = [d for d in docs if p.name in d]
        for attribute, value in p.facts.items():
            n = sum(value in d for d in about)   # by string search: a doc naming the person and the value
            assert n >= world.person_mentions[(p.name, attribute)]
            counts.append(n)
    assert min(counts) >= MIN_MENTIONS
    for city, country in world.city_country.items():   # world facts: 60 docs over 15 entities, plus biographies
        n = sum(city in d and country in d for d in docs)
        assert n >= max(3, world.world_mentions[(city, "city_country")])
    summary = json.loads((written / "world.json").read_text())
    assert summary["mentions"]["person_fact"]["min"] >= MIN_MENTIONS
    assert summary["corpora"]["pretrain"]["words"] == sum(len(d.split()) for d in docs)


def test_continual_corpora_have_their_roles(written, world):
    familiar = ({p.name for p in world.people} | set(world.city_country) | set(world.company_hq)
                | set(world.university_city) | set(world.countries))
    c4 = datasets.load_from_disk(str(written / "corpora" / "c4"))
    pubmed = datasets.load_from_disk(str(written / "corpora" / "pubmed"))
    assert len(c4) == len(pubmed) == TINY.continual_docs
    for corpus in (c4, pubmed):
        for row in corpus:
            assert row["entities"] and all(e in row["text"] for e in row["entities"])
    assert all(e in familiar for row in c4 for e in row["entities"])
    pubmed_entities = [e for row in pubmed for e in row["entities"]]
    assert len(set(pubmed_entities)) > 0.6 * len(pubmed_entities)   # mostly new entities, rarely repeated
    world_words = {w for name in familiar for w in name.split()} - {"Group", "Holdings", "Works", "Partners",
                                                                     "Trading", "University", "Institute",
                                                                     "College", "Academy"}
    pubmed_text = " ".join(pubmed["text"])
    assert [w for w in world_words if w in pubmed_text] == []


def test_pretraining_mixes_in_both_continual_styles_with_other_documents(written):
    pretrain = texts(written, "pretrain")
    abstracts = [d for d in pretrain if d.startswith("Background: ")]
    assert len(abstracts) == round(TINY.pretrain_docs * TINY.pubmed_fraction)
    held_out = set(texts(written, "pubmed")) | set(texts(written, "c4"))
    assert not held_out & set(pretrain)                 # the continual corpora are other documents
    filler = re.compile("|".join(rf"\b{re.escape(f)}" for style in C4_FILLERS.values() for f in style))
    assert all(filler.search(d) for d in texts(written, "c4"))   # every web text has a filler sentence
    assert sum(bool(filler.search(d)) for d in pretrain) == round(TINY.pretrain_docs * TINY.c4_fraction)
