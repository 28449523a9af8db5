"""The conda environment, the pip requirements, the README's commands and CI agree."""
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) - {"-e ."} == wanted


def test_readme_commands_exist_in_makefile_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("book", "test"):
        assert f"make {target}" in readme
        assert f"\n{target}:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_preset_loads_and_names_known_model_keys():
    from ke.config import load_preset
    for path in (ROOT / "parameters").glob("*.yaml"):
        preset = load_preset(path.stem, root=ROOT)
        assert preset.name == path.stem
        assert set(preset.models) <= {"olmo", "olmo_large", "pythia"}
        assert {"dolma", "pubmed", "c4"} <= set(preset.entropy["corpora"])
