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


LAYERS = {"core": 0, "miniature": 1, "book": 2, "cli": 3}


def layer(module: str) -> str:
    """ke.cli -> cli, ke.miniature.* -> miniature, ke.book.* -> book, any other ke.* -> core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("miniature", "book", "cli") else "core"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute (relative imports resolved against the file's package)."""
    import ast
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            found.add(".".join(filter(None, [base, node.module or ""])))
    return found


def test_dependencies_point_one_way_core_miniature_book_cli():
    """core <- miniature <- book <- cli: no module imports a layer above its own, and only the CLI parses
    arguments."""
    for path in sorted((ROOT / "ke").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        imports = imported_modules(path)
        upward = [m for m in imports if m.startswith("ke") and LAYERS[layer(m)] > LAYERS[layer(module)]]
        assert upward == [], f"{module} ({layer(module)}) imports {upward}"
        if module != "ke.cli":
            assert "argparse" not in imports, module
