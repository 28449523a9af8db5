"""The `ke` command line: an end-to-end run in a subprocess, and one clear line (exit status 2) for bad input."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import make_texts
from ke.book.presets import load_preset
from ke.cli import main

REPO = Path(__file__).resolve().parents[1]
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm lines (ours and transformers' weight loading) are not messages


@pytest.fixture
def docs(tmp_path) -> Path:
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(make_texts(8, seed=2)))
    return path


def message_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]


def assert_one_error_line(stderr: str, *names: str):
    """Bad input: no traceback, exactly one message line, and it names the offending input."""
    assert "Traceback" not in stderr
    lines = message_lines(stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("ke ") and "error" in lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])


def entropy_args(model, data, out, *extra):
    return ["entropy", str(model), "--data", str(data), "--seq-len", "32", "--batch-size", "2",
            "--out", str(out), *extra]


def test_entropy_end_to_end(tiny_models, docs, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ke.cli", *entropy_args(tiny_models("olmo"), docs, out, "--max-docs", "5",
                                                              "--attention", "--ntp")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    shown = json.loads(done.stdout.splitlines()[0])
    record = json.loads((out / "entropy.json").read_text())
    for name in ("knowledge_entropy", "attention_entropy", "ntp_entropy"):
        assert shown[name] == pytest.approx(record[name], abs=1e-12)
    assert record["num_docs"] == shown["num_docs"] == 5
    assert len(record["layer_attention_entropy"]) == 2 and len(record["head_attention_entropy"][0]) == 4
    assert record["provenance"]["seq_len"] == 32
    coefficients = load_file(str(out / "coefficients.safetensors"))["mean_abs_coefficients"]
    assert tuple(coefficients.shape) == (2, 48)


def test_missing_data_file_in_subprocess(tiny_models, tmp_path):
    missing = tmp_path / "nowhere.txt"
    done = subprocess.run([sys.executable, "-m", "ke.cli", *entropy_args(tiny_models("olmo"), missing, tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, str(missing))
    assert not (tmp_path / "entropy.json").exists()


def test_missing_model_folder(docs, tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    assert main(entropy_args(missing, docs, tmp_path / "out")) == 2
    assert_one_error_line(capsys.readouterr().err, str(missing))


def test_empty_data_file(tiny_models, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(entropy_args(tiny_models("olmo"), empty, tmp_path / "out")) == 2
    assert_one_error_line(capsys.readouterr().err, str(empty))


def test_revision_on_local_folder_is_refused(tiny_models, docs, tmp_path, capsys):
    """A local folder has no branches: silently ignoring --revision would record a revision that was never
    loaded in the provenance. Refuse it, naming the option."""
    out = tmp_path / "out"
    assert main(entropy_args(tiny_models("olmo"), docs, out, "--revision", "step123")) == 2
    assert_one_error_line(capsys.readouterr().err, "--revision")
    assert not (out / "entropy.json").exists()


def test_seq_len_zero_is_an_argparse_error(tiny_models, docs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(entropy_args(tiny_models("olmo"), docs, tmp_path / "out", "--seq-len", "0"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "--seq-len" in err.splitlines()[-1] and "0" in err.splitlines()[-1]


def test_mixture_of_experts_is_refused(tiny_models, docs, tmp_path, capsys):
    assert main(entropy_args(tiny_models("qwen2_moe"), docs, tmp_path / "out")) == 2
    assert_one_error_line(capsys.readouterr().err, "mixture-of-experts")


def test_cuda_on_a_cpu_machine(tiny_models, docs, tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    assert main(entropy_args(tiny_models("olmo"), docs, tmp_path / "out", "--device", "cuda")) == 2
    assert_one_error_line(capsys.readouterr().err, "--device")


def test_checkpoints_lists_steps(tiny_models, tmp_path, capsys):
    run = tmp_path / "run"
    for step in (100, 0, 10):
        shutil.copytree(tiny_models("olmo"), run / f"step{step}")
    assert main(["checkpoints", str(run)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows == [["0", "step0"], ["10", "step10"], ["100", "step100"]]


def test_checkpoints_of_missing_run(tmp_path, capsys):
    assert main(["checkpoints", str(tmp_path / "no_run")]) == 2
    assert_one_error_line(capsys.readouterr().err, str(tmp_path / "no_run"))


def test_plan_prints_the_work_of_a_preset_without_computing_it(capsys):
    assert main(["plan", "--preset", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "continual_runs:" in out and "pretraining:" in out and "# work items:" in out


def test_plan_shows_derived_numbers_and_counts_once(capsys):
    """Beside the fractions and targets of the preset, the numbers they amount to; the body and the footer give
    the same count of every kind of work item."""
    import yaml
    assert main(["plan", "--preset", "default"]) == 0
    out = capsys.readouterr().out
    body = yaml.safe_load(out)
    footer = dict(re.findall(r"(\w[\w ]*?) (\d+)(?:,|$)", out.splitlines()[-1].removeprefix("# work items: ")))
    assert int(footer["measurements"]) == body["measurements"]["count"]
    assert int(footer["pretraining runs"]) == len(body["pretraining"])
    assert int(footer["continual runs"]) == len(body["continual_runs"])
    assert int(footer["resuscitated checkpoints"]) == len(body["resuscitated_checkpoints"])
    olmo = next(r for r in body["pretraining"] if r["model"] == "olmo")
    derived, config = olmo["derived"], olmo["config"]
    # the targets parameters/default.yaml gives the 1B role (tokens per parameter, S, 1% warmup), met by the numbers
    target = load_preset("default").models["olmo"].pretrain
    assert derived["tokens_per_parameter"] == pytest.approx(target.tokens_per_parameter, rel=0.01)
    assert derived["weight_decay_efolds (S)"] == pytest.approx(target.weight_decay_efolds, abs=0.01)
    assert derived["warmup_steps"] == config["warmup_steps"] == round(0.01 * config["steps"])
    assert derived["tokens"] == config["steps"] * 16 * 128
    baseline = body["continual_configurations"]["baseline"]["derived"]
    assert (baseline["total_steps"], baseline["warmup_steps"], baseline["tokens"]) == (80, 4, 80 * 16 * 128)
    assert baseline["injection_steps"].startswith("every 8 (steps 8, 16, ..., 80")


def subcommands():
    from ke.cli import build_parser
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", ["entropy", "checkpoints", "first-batch", "pretrain", "continual", "resuscitate",
                                  "book", "plan"])
def test_every_subcommand_describes_itself_and_its_defaults(name):
    parser = subcommands()[name]
    parsers = [parser] + [p for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)
                          for p in a.choices.values()]
    for p in parsers:
        assert p.description and p.description.rstrip().endswith("."), (p.prog, p.description)
        text = "".join(p.format_help().split())  # long defaults (URLs) are wrapped anywhere
        for action in p._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert f"(default:{action.default})".replace(" ", "") in text, (p.prog, action.option_strings)
            if action.option_strings and action.dest != "help":
                assert action.help, (p.prog, action.option_strings)


def test_help_shows_defaults_allowed_values_and_version(capsys):
    import ke
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"ke {ke.__version__}"
    top = " ".join(subcommands()["entropy"].format_help().split())
    assert "--seq-len SEQ_LEN tokens per document" in top and "(default: 1024)" in top and "(default: 8)" in top
    from ke.cli import build_parser
    description = build_parser().description
    assert description.endswith(".") and "`ke COMMAND --help`" in description
    pretrain = " ".join(subcommands()["pretrain"].format_help().split())
    continual = " ".join(subcommands()["continual"].format_help().split())
    for flag, values in (("--lr-shape", "{cosine,linear,constant}"), ("--family", "{olmo,gpt_neox}"),
                         ("--activation", "{silu,gelu,relu}"), ("--mixed-precision", "{no,bf16,fp16}")):
        assert f"{flag} {values}" in pretrain, flag
    assert "--probe-normalisation {per_token,official}" in continual
    assert "--mixed-precision {no,bf16,fp16}" in continual
    assert "(default: per_token)" in continual and "(default: 160)" in continual
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--corpus", "c", "--tokenizer", "t", "--out", "o", "--lr-shape", "cosinus"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'cosinus'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["book", "pilots"])
def test_a_non_positive_number_of_jobs_is_an_argparse_error(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--jobs", "0"] + (["p.yaml"] if name == "pilots" else []))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"ke {name}: error: argument --jobs: expected a positive integer, got 0"


def test_version_from_a_checkout_that_is_not_installed(tmp_path):
    """`python -m ke.cli --version` from a source tree, with no installed distribution named ke to ask."""
    import ke
    hide_installed = ("import importlib.metadata as m, runpy, sys\n"
                      "def missing(*args): raise m.PackageNotFoundError('ke')\n"
                      "m.version = m.distribution = m.metadata = missing\n"
                      "sys.argv = ['ke', '--version']\n"
                      "runpy.run_module('ke.cli', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", hide_installed], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ke {ke.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", ke.__version__)


def test_the_version_is_written_once():
    """pyproject.toml reads the version from ke/__init__.py instead of repeating it."""
    import tomllib
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ke.__version__"}
