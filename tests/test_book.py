"""The whole pipeline on the smoke preset: zoo, per-checkpoint notebooks, chapters, Jupyter Book, browser.

Runs in a copy of the book's sources under a temporary folder, so the checkout stays clean."""
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from ke.book import build_book, chapter_notebooks

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".ci"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name in ("book", "parameters"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("checkpoints", "*.pyc"))
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, root / name)
    started = time.time()
    index = build_book("smoke", root=root, warnings_as_errors=True, progress=False)
    return root, index, time.time() - started


def test_book_builds_every_page_without_warnings(built):
    root, index, seconds = built
    html = root / "_build" / "html"
    assert index == html / "index.html" and index.exists()
    for notebook in chapter_notebooks(root):
        page = html / notebook.replace(".ipynb", ".html")
        assert page.exists(), page
    from ke.config import load_preset
    from ke.zoo import checkpoints
    preset = load_preset("smoke", root=root)
    pages = sorted(p.stem for p in (html / "book" / "checkpoints").glob("*.html"))
    expected = sorted(f"{key}-{c.name}" for key in preset.models for c in checkpoints(preset, key))
    assert pages == expected
    print(f"smoke book built in {seconds:.0f} s")


def test_executed_chapters_show_the_injected_preset_and_no_errors(built):
    root, _, _ = built
    for notebook in chapter_notebooks(root):
        nb = json.loads((root / "_build" / "stage" / notebook).read_text())
        assert nb["metadata"]["papermill"]["parameters"]["name"] == "smoke"
        outputs = [o for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"]
        defaults = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert all("remove-cell" in c["metadata"]["tags"] for c in defaults)


def test_the_parallel_plan_covers_every_run_the_chapters_read(built):
    """`ke book` computes experiments.planned_runs + interventions.planned_runs before the chapters; a run a
    chapter needs that the plan lacks would add a result folder (and run sequentially, slowly)."""
    from ke import experiments, interventions
    from ke.config import load_preset
    root, _, _ = built
    preset = load_preset("smoke", root=root)
    planned = {json.dumps(run, sort_keys=True) for run in experiments.planned_runs(preset)
               + interventions.planned_runs(preset)}
    results = list((preset.run_dir / "continual").rglob("result.json"))
    assert len(results) == len(planned) > 10


def test_a_failing_run_stops_compute_runs_with_its_error(built):
    from ke.book import compute_runs
    from ke.errors import UserError
    root, _, _ = built
    raw = yaml.safe_load((root / "parameters" / "smoke.yaml").read_text())
    raw["name"] = "broken"   # the smoke zoo, but a batch too small for an injection
    raw["continual"]["config"]["batch_size"] = 1
    (root / "parameters" / "broken.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError):   # raised in a worker process, surfaced here
        compute_runs("broken", root, jobs=2, progress=False)


def test_readme_figure_is_exported_from_the_executed_chapter(built, tmp_path):
    from ke.book import export_figure
    from ke.errors import UserError
    root, _, _ = built
    out = tmp_path / "figure.png"
    export_figure(root / "_build" / "stage" / "book" / "entropy.ipynb", "Figure 2", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(UserError, match="no image after a heading"):
        export_figure(root / "_build" / "stage" / "book" / "entropy.ipynb", "Figure 99", out)


def test_second_build_reuses_everything(built):
    root, _, first = built
    started = time.time()
    build_book("smoke", root=root, progress=False)
    assert time.time() - started < first / 2


def test_chapter_reruns_with_a_preset_file_as_papermill_parameters(built):
    import papermill
    root, _, _ = built
    parameters = yaml.safe_load((root / "parameters" / "smoke.yaml").read_text())
    out = root / "rerun.ipynb"
    papermill.execute_notebook(str(root / "book" / "entropy.ipynb"), str(out), parameters=parameters,
                               cwd=str(root / "book"), kernel_name="python3", progress_bar=False)
    assert "Summary" in out.read_text()


def test_chapter_renders_its_figures_in_headless_chromium(built):
    import browser_check
    root, _, _ = built
    if browser_check.chromium() is None:
        pytest.skip("chromium is not installed here (.ci/run installs it: apt-get install chromium)")
    problems = browser_check.check(root / "_build" / "html" / "book" / "entropy.html")
    assert problems == []


def test_changed_preset_reruns_the_pages(built):
    root, _, _ = built
    page = root / "_build" / "stage" / "book" / "entropy.ipynb"
    before = page.stat().st_mtime
    time.sleep(0.01)
    (root / "parameters" / "smoke.yaml").touch()
    build_book("smoke", root=root, progress=False)
    assert page.stat().st_mtime > before
