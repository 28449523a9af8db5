"""Tests of ke.knowledge: loading and validating Fictional Knowledge, the official injection schedule, probes."""
import json
import shutil

import pytest

from ke.errors import UserError
from ke.knowledge import ITEM_KEYS, FictionalKnowledge, injection_schedule, load_fictional_knowledge, probes



def item(tag: str, n_paraphrases: int = 9) -> dict:
    return {"train_context": f"context {tag}", "paraphrases": [f"paraphrase {j} of {tag}" for j in range(n_paraphrases)],
            "mem_input": [f"mem {tag} {j}" for j in range(6)], "mem_target": [f"mt {tag} {j}" for j in range(6)],
            "gen_input": [f"gen {tag} {j}" for j in range(5)], "gen_target": [f"gt {tag} {j}" for j in range(5)],
            "hard_gen_input": [f"hard {tag} {j}" for j in range(3)], "hard_gen_target": [f"ht {tag} {j}" for j in range(3)]}


@pytest.fixture(scope="module")
def real(fictional_knowledge):
    """The paper's files (../shared; a missing copy skips here and fails under CI)."""
    return load_fictional_knowledge(fictional_knowledge)


def test_real_schedule_is_the_official_pkl_layout(real):
    """The official paraphrase70-once60split.pkl: 10 groups of 76; 0-69 = version k of the paraphrase items, 70-75 = once[6(k-1):6k]."""
    assert (len(real.paraphrase), len(real.once)) == (70, 60)
    schedule = injection_schedule(real, 10)
    assert sorted(schedule) == list(range(1, 11))
    seen_once = []
    for k, texts in schedule.items():
        assert len(texts) == 76
        for i in range(70):
            expected = real.paraphrase[i]["train_context"] if k == 1 else real.paraphrase[i]["paraphrases"][k - 2]
            assert texts[i] == expected
        assert texts[70:] == [real.once[j]["train_context"] for j in range(6 * (k - 1), 6 * k)]
        seen_once += texts[70:]
    assert sorted(seen_once) == sorted(x["train_context"] for x in real.once)  # every once item exactly once
    assert len(set(seen_once)) == 60
    assert schedule[1][0].startswith("The fortieth government of Mars")  # the first paraphrase item
    assert schedule[1][70].startswith("The Albatross Blaze")


def test_real_probes(real):
    ps = probes(real)
    assert len(ps) == 1950
    for s, n in (("paraphrase", 350), ("once", 300)):
        for kind in ("memorization", "semantic", "composition"):
            assert sum(p.set == s and p.kind == kind for p in ps) == n
    first = next(p for p in ps if p.set == "once" and p.kind == "memorization")
    assert (first.item, first.target) == (0, "Scotland")
    hard = next(p for p in ps if p.set == "once" and p.kind == "composition")
    assert hard.target == "the water from Loch Lomond"


def test_real_schema_errors_are_one_clear_sentence(tmp_path, fictional_knowledge):
    for name in ("fictional_knowledge_paraphrased_paraphrase70.json", "fictional_knowledge_paraphrased_once60.json"):
        shutil.copy(fictional_knowledge / name, tmp_path / name)
    once = tmp_path / "fictional_knowledge_paraphrased_once60.json"
    items = json.loads(once.read_text())
    del items[3]["hard_gen_target"]
    once.write_text(json.dumps(items))
    with pytest.raises(UserError, match=r"item 3 lacks the keys \['hard_gen_target'\]") as error:
        load_fictional_knowledge(tmp_path)
    assert str(error.value).count(". ") == 0 and str(error.value).endswith(".")
    items[3]["hard_gen_target"] = "Scotland"  # a string, not a list
    once.write_text(json.dumps(items))
    with pytest.raises(UserError, match="lists of strings"):
        load_fictional_knowledge(tmp_path)
    once.write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        load_fictional_knowledge(tmp_path)


def test_missing_folder_or_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_fictional_knowledge(tmp_path / "nowhere")
    fk = FictionalKnowledge([item("p0")], [item("o0")])
    fk.save(tmp_path)
    (tmp_path / "fictional_knowledge_paraphrased_once60.json").unlink()
    with pytest.raises(UserError, match=r"exactly one \*_once<N>.json file; found 0"):
        load_fictional_knowledge(tmp_path)


def test_save_load_round_trip_and_suffix_matching(tmp_path):
    fk = FictionalKnowledge([item("p0"), item("p1")], [item("o0")])
    fk.save(tmp_path / "a")
    assert load_fictional_knowledge(tmp_path / "a") == fk
    # other counts in the names work; "paraphrased_once" must not count as a paraphrase file
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine_paraphrase2.json").write_text(json.dumps(fk.paraphrase))
    (tmp_path / "b" / "mine_paraphrased_once1.json").write_text(json.dumps(fk.once))
    assert load_fictional_knowledge(tmp_path / "b") == fk
    assert fk.fingerprint() == load_fictional_knowledge(tmp_path / "b").fingerprint()
    assert fk.fingerprint() != FictionalKnowledge(fk.paraphrase, fk.paraphrase).fingerprint()


def test_schedule_on_synthetic_data():
    fk = FictionalKnowledge([item("p0"), item("p1")], [item(f"o{j}") for j in range(7)])
    schedule = injection_schedule(fk, groups=3)
    assert schedule[1][:2] == ["context p0", "context p1"]
    assert schedule[3][:2] == ["paraphrase 1 of p0", "paraphrase 1 of p1"]
    once = [t for k in (1, 2, 3) for t in schedule[k][2:]]
    assert once == [f"context o{j}" for j in range(7)]  # uneven split: every once item exactly once, in order
    assert [len(schedule[k]) - 2 for k in (1, 2, 3)] == [2, 2, 3]
    with pytest.raises(UserError, match="need 9 paraphrases"):
        injection_schedule(FictionalKnowledge([item("p", n_paraphrases=3)], []), groups=10)


def test_probes_mapping_and_first_five():
    fk = FictionalKnowledge([item("p0")], [item("o0"), item("o1")])
    ps = probes(fk)
    mem = [p for p in ps if p.set == "paraphrase" and p.kind == "memorization"]
    assert [(p.input, p.target) for p in mem] == [(f"mem p0 {j}", f"mt p0 {j}") for j in range(5)]  # 6 given, 5 kept
    comp = [p for p in ps if p.set == "once" and p.kind == "composition"]
    assert [(p.item, p.input, p.target) for p in comp] == [(i, f"hard o{i} {j}", f"ht o{i} {j}")
                                                           for i in range(2) for j in range(3)]
    sem = [p for p in ps if p.kind == "semantic"]
    assert all(p.input.startswith("gen") and p.target.startswith("gt") for p in sem) and len(sem) == 15
    assert len(ps) == 3 * (5 + 5 + 3)
    assert set(ITEM_KEYS) == set(item("x"))
