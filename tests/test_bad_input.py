"""Bad input through the real CLI: each case ends in one sentence naming the input and the fix, exit status 2, no
traceback, before any work (nothing written to the output folder)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((REPO / "parameters" / "smoke.yaml").read_text())


def changed(change) -> dict:
    preset = copy.deepcopy(SMOKE)
    change(preset)
    return preset


def set_in(section: str, **values):
    return lambda preset: preset[section].update(values)


# (case, preset as data or YAML text, a phrase the message must hold)
PRESETS = [
    ("a YAML scalar", "42\n", "must be a mapping of preset sections"),
    ("models: null", changed(lambda p: p.update(models=None)), "models must be a mapping of at least one model"),
    ("models: {a: 5}", changed(lambda p: p.update(models={"a": 5})), "models.a must be a mapping of ModelSpec"),
    ("models: {}", changed(lambda p: p.update(models={})), "models must be a mapping of at least one model"),
    ("entropy.seq_len: 0", changed(set_in("entropy", seq_len=0)), "entropy.seq_len is 0; it must be a positive"),
    ("max_docs: -3", changed(set_in("entropy", max_docs=-3)), "entropy.max_docs is -3; it must be a positive"),
    ("entropy.seq_len past a zoo model's context", changed(set_in("entropy", seq_len=65)),
     "entropy.seq_len 65 is longer than the context of models.olmo (pretrain.seq_len 64)"),
    ("a continual start past the run", changed(lambda p: p["continual"]["starts"].update(olmo=[10, 400])),
     "continual.starts.olmo names step 400, which model 'olmo' does not have"),
    ("a continual start between saved steps", changed(lambda p: p["continual"]["starts"].update(olmo=[15])),
     "continual.starts.olmo names step 15"),
    ("a fraction past the run", changed(set_in("continual", table_starts=[0.5, 1.5])),
     "continual.table_starts has the fraction 1.5, outside the run"),
    ("a resuscitation step past the run", changed(set_in("resuscitation", final=400)),
     "resuscitation.final names step 400"),
    ("a continual setting that cannot run", changed(lambda p: p["continual"]["settings"].update(odd={"steps": 7})),
     "settings.odd: --steps (7) must be a multiple of --injections"),
    ("a resuscitation ratio as a percentage", changed(set_in("resuscitation", ratios=[0.5, 50])),
     "resuscitation: ratio must be a fraction in (0, 1], not a percentage (for 50% pass 0.5)"),
    ("a negative number of bootstrap draws", changed(set_in("entropy", bootstrap=-1)), "entropy.bootstrap is -1"),
    ("a misspelled key", changed(set_in("entropy", max_doc=3)), "unknown key 'max_doc'; did you mean 'max_docs'?"),
    ("a misspelled section", changed(lambda p: p.update(entropi=p.pop("entropy"))),
     "unknown section 'entropi'; did you mean 'entropy'?"),
    ("a misspelled setting field", changed(lambda p: p["continual"]["settings"].update(odd={"learning_rate": 1})),
     "overrides unknown field 'learning_rate'"),
    ("invalid YAML", "name: broken\nmodels:\n  a: [1,\n  b: 2\nentropy: {}\n", "is not valid YAML at line 5"),
]


def run_ke(*args, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ke.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def assert_refused(done: subprocess.CompletedProcess, phrase: str):
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ke ") and ": error: " in lines[0], lines
    assert phrase in lines[0], (phrase, lines[0])
    assert lines[0].rstrip().endswith((".", "?")), lines[0]  # a whole sentence


@pytest.mark.parametrize("case, preset, phrase", PRESETS, ids=[case for case, _, _ in PRESETS])
def test_bad_preset_is_refused_by_ke_plan(case, preset, phrase, tmp_path):
    path = tmp_path / "preset.yaml"
    runs = tmp_path / "runs"
    if isinstance(preset, dict):
        preset["run_dir"] = str(runs)
    path.write_text(preset if isinstance(preset, str) else yaml.safe_dump(preset))
    done = run_ke("plan", "--preset", path)
    assert_refused(done, phrase)
    assert str(path) in done.stderr or "preset 'smoke'" in done.stderr  # names the input
    assert not runs.exists()


def test_the_unchanged_preset_plans(tmp_path):
    """The control of the table above: the same file, unchanged, passes."""
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump({**SMOKE, "run_dir": str(tmp_path / "runs")}))
    done = run_ke("plan", "--preset", path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def docs(tmp_path) -> Path:
    path = tmp_path / "docs.txt"
    path.write_text("the city of the river\nthe people of the north\n")
    return path


@pytest.mark.parametrize("arch, context", [("gpt2", 128), ("olmo", 128), ("gpt_neox", 128)])
def test_seq_len_past_the_context_is_refused(arch, context, tiny_models, docs, tmp_path):
    """Learned positions (GPT-2) would index past their table; rotary ones (OLMo, GPT-NeoX) would silently run on
    positions never trained: both refused, naming the limit, for one checkpoint and for a run of several."""
    model = tiny_models(arch)
    out = tmp_path / "out"
    done = run_ke("entropy", model, "--data", docs, "--seq-len", context + 1, "--out", out)
    assert_refused(done, f"--seq-len {context + 1} is longer than the context of {model} ({context} tokens); "
                         f"pass --seq-len {context} or less.")
    assert not out.exists()
    run = tmp_path / "run"
    run.mkdir()
    for step in (0, 10):
        (run / f"step{step}").symlink_to(model, target_is_directory=True)
    done = run_ke("entropy", run, "--all-checkpoints", "--data", docs, "--seq-len", context + 1, "--out", out)
    assert_refused(done, f"--seq-len {context + 1} is longer than the context")
    assert not out.exists()
    done = run_ke("entropy", model, "--data", docs, "--seq-len", context, "--max-docs", 1, "--out", out)
    assert done.returncode == 0, done.stderr  # the context itself is allowed


def test_single_checkpoint_is_not_a_run(tiny_models):
    model = tiny_models("olmo")
    done = run_ke("checkpoints", model)
    assert_refused(done, f"{model} is one checkpoint, not a run of stepN/ checkpoint folders")
    assert done.stdout == ""


def test_offline_hub_fails_in_seconds(docs, tmp_path):
    """An uncached hub model without the hub: one sentence at once, no retries (HF_HUB_OFFLINE=1 as a machine
    without network would be; the empty HF_HOME makes sure nothing is cached)."""
    out = tmp_path / "out"
    started = time.perf_counter()
    done = run_ke("entropy", "allenai/OLMo-1B-hf", "--revision", "step20000-tokens84B", "--data", docs,
                  "--out", out, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    elapsed = time.perf_counter() - started
    assert_refused(done, "the Hugging Face Hub is unreachable and the local cache has no "
                         "allenai/OLMo-1B-hf@step20000-tokens84B;")
    assert elapsed < 45, elapsed  # the interpreter and torch start; retries took 52 s alone
    assert not out.exists()
