"""The whole pipeline on the smoke preset: plan, world, zoo, measurements, continual runs, pages, Jupyter Book,
browser; a rebuild that reuses everything; Ctrl-C that stops a build and a rerun that resumes it.

Runs in a copy of the book's sources under a temporary folder, so the checkout stays clean."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ke.book.build import build_book, chapter_notebooks, compute
from ke.book.plan import make_plan
from ke.book.presets import load_preset
from ke.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".ci"))
pytestmark = pytest.mark.slow


def copy_project(root: Path) -> Path:
    for name in ("book", "parameters"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("checkpoints", "*.pyc"))
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, root / name)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("project"))
    started = time.time()
    index = build_book("smoke", root=root, warnings_as_errors=True, progress=False)
    return root, index, time.time() - started


def artifacts(root: Path) -> dict[Path, int]:
    """Every computed file and executed page, with its modification time."""
    files = [p for p in (root / "runs").rglob("*") if p.is_file()]
    files += list((root / "_build" / "stage").rglob("*.ipynb"))
    return {p: p.stat().st_mtime_ns for p in files}


def test_book_builds_every_page_without_warnings(built):
    root, index, seconds = built
    html = root / "_build" / "html"
    assert index == html / "index.html" and index.exists()
    for notebook in chapter_notebooks(root):
        assert (html / notebook.replace(".ipynb", ".html")).exists(), notebook
    plan = make_plan(load_preset("smoke", root=root))
    pages = sorted(p.stem for p in (html / "book" / "checkpoints").glob("*.html"))
    expected = sorted(f"{ref.model}-step{ref.step}" for model in plan.models
                      for ref in plan.checkpoints[(model, plan.seeds(model)[0])])
    assert pages == expected
    print(f"smoke book built in {seconds:.0f} s")


def test_executed_chapters_show_the_injected_preset_and_no_errors(built):
    root, _, _ = built
    for notebook in chapter_notebooks(root):
        nb = json.loads((root / "_build" / "stage" / notebook).read_text())
        assert nb["metadata"]["papermill"]["parameters"]["name"] == "smoke"
        outputs = [o for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"]
        assert not [o for o in outputs if o.get("name") == "stderr"], notebook  # no warnings leak onto a page
        defaults = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert all("remove-cell" in c["metadata"]["tags"] for c in defaults)


def test_the_plan_covers_every_run_the_chapters_read(built):
    """`ke book` computes the plan before the pages; a run a page needed that the plan lacks would be computed by
    the page and add a result folder."""
    root, _, _ = built
    plan = make_plan(load_preset("smoke", root=root))
    results = list((plan.run_dir / "continual").rglob("result.json"))
    assert len(results) == len(plan.continual) > 10
    assert len(list((plan.run_dir / "entropy").rglob("entropy.json"))) == len(plan.measurements)


def test_a_failing_item_stops_the_build_with_its_error(built):
    root, _, _ = built
    raw = yaml.safe_load((root / "parameters" / "smoke.yaml").read_text())
    raw["name"] = "broken"   # the smoke book, plus a setting whose batch is too small for an injection
    raw["run_dir"] = "runs/smoke"
    raw["continual"]["settings"]["tiny_batch"] = {"batch_size": 1}
    (root / "parameters" / "broken.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="batch"):   # raised in a worker process, surfaced here
        compute(make_plan(load_preset("broken", root=root)), jobs=2, progress=False)
    with pytest.raises(UserError, match="--jobs must be a positive integer"):
        build_book("smoke", root=root, jobs=0)


def test_readme_figure_is_exported_from_the_executed_chapter(built, tmp_path):
    from ke.book.build import export_figure
    root, _, _ = built
    out = tmp_path / "figure.png"
    export_figure(root / "_build" / "stage" / "book" / "entropy.ipynb", "Figure 2", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(UserError, match="no image after a heading"):
        export_figure(root / "_build" / "stage" / "book" / "entropy.ipynb", "Figure 99", out)


def test_second_build_reuses_everything(built):
    root, _, _ = built
    before = artifacts(root)
    build_book("smoke", root=root, progress=False)
    assert artifacts(root) == before  # nothing recomputed, no page re-executed


def test_chapter_reruns_with_a_preset_file_as_papermill_parameters(built, caplog):
    """The README's `papermill book/entropy.ipynb out.ipynb -f parameters/<preset>.yaml`: every section of the
    preset is a parameter of the chapter, so papermill warns of no unknown parameter."""
    import papermill
    from ke.book.build import write_kernel
    root, _, _ = built
    write_kernel(root)
    parameters = yaml.safe_load((root / "parameters" / "smoke.yaml").read_text())
    out = root / "rerun.ipynb"
    with caplog.at_level(logging.WARNING, logger="papermill"):
        papermill.execute_notebook(str(root / "book" / "entropy.ipynb"), str(out), parameters=parameters,
                                   cwd=str(root / "book"), kernel_name="ke", progress_bar=False)
    assert "Summary" in out.read_text()
    assert not [r for r in caplog.records if "unknown parameter" in r.getMessage().lower()]


def test_every_page_renders_offline_in_headless_chromium(built, tmp_path):
    """Every page of the built book, opened with no network: figures load, equations render (MathJax served from
    the build), no table or equation is cut off (the check is .ci/browser_check.py; tests/test_rendering.py tests
    the check itself)."""
    import browser_check
    from conftest import unavailable
    root, _, _ = built
    if browser_check.chromium() is None:
        unavailable("chromium is not installed here (.ci/run installs it: apt-get install chromium)")
    assert browser_check.check(root / "_build" / "html", tmp_path) == []


def test_results_at_a_glance_show_every_recorded_claim(built):
    """The glance page holds one linked badge per claim the chapters recorded (staged as summary.json), the intro
    the verdict counts; no marker is left."""
    root, _, _ = built
    recorded = json.loads((root / "_build" / "stage" / "book" / "summary.json").read_text())
    claims = [c for data in recorded.values() if isinstance(data, dict) and "claims" in data for c in data["claims"]]
    assert len(claims) > 20
    results = (root / "_build" / "html" / "book" / "results.html").read_text()
    assert results.count('<a class="verdict verdict-') == len(claims)
    intro = (root / "_build" / "html" / "book" / "intro.html").read_text()
    assert '<span class="verdict verdict-' in intro and '<a class="verdict' not in intro
    for page in ("results.md", "intro.md"):
        assert "<!-- glance" not in (root / "_build" / "stage" / "book" / page).read_text()


def test_make_pdf_holds_every_chapter_with_typeset_maths(built, tmp_path):
    """`make pdf` on the built book: every chapter's title in the PDF's text, MathJax's output instead of TeX."""
    import print_pdf
    from conftest import unavailable
    root, _, _ = built
    if print_pdf.chromium() is None or shutil.which("pdftotext") is None:
        unavailable("chromium and pdftotext (poppler-utils) are needed: apt-get install chromium poppler-utils")
    out = tmp_path / "book.pdf"
    assert print_pdf.print_pdf(print_pdf.single_page(root / "_build" / "stage"), out) > 50
    text = " ".join(subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True).stdout.split())
    for notebook in chapter_notebooks(root):
        cells = json.loads((root / notebook).read_text())["cells"]
        title = next(c for c in cells if c["cell_type"] == "markdown")["source"][0].removeprefix("# ").strip()
        assert title in text, title
    assert "Results at a glance" in text and "Show code cell source" not in text   # folded code stays off paper
    assert not [tex for tex in ("\\frac", "\\mathcal", "$$") if tex in text]


def test_changed_preset_reruns_the_pages(built):
    root, _, _ = built
    page = root / "_build" / "stage" / "book" / "entropy.ipynb"
    before = page.stat().st_mtime_ns
    time.sleep(0.01)
    (root / "parameters" / "smoke.yaml").touch()
    build_book("smoke", root=root, progress=False)
    assert page.stat().st_mtime_ns > before


def test_ctrl_c_stops_a_build_within_seconds_and_a_rerun_resumes(tmp_path):
    """SIGINT to the build's whole process group, as a terminal sends it: the build stops with one line saying what
    was kept (workers and kernels included), and the next run finishes without redoing the kept work."""
    root = copy_project(tmp_path)
    command = [sys.executable, "-m", "ke.cli", "book", "--preset", "smoke"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # SIGINT as a terminal's foreground job has it: a test run started in the background (`cmd &` in a script) ignores
    # SIGINT, its children inherit that, and Python then installs no Ctrl-C handler at all
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    final = root / "runs" / "smoke" / "zoo" / "olmo" / "seed0" / "step40" / "ke_checkpoint.json"
    deadline = time.time() + 300
    while not final.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert final.exists(), process.communicate()[1][-2000:]
    time.sleep(2)   # into the measurements
    kept = final.stat().st_mtime_ns
    os.killpg(process.pid, signal.SIGINT)
    stopped = time.time()
    _, stderr = process.communicate(timeout=60)
    assert time.time() - stopped < 15
    assert process.returncode == 130
    assert "computed items are kept" in stderr and "run the same command again to resume" in stderr
    time.sleep(3)   # kernels notice their parent is gone within a second or two
    leftovers = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert leftovers == []
    rerun = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert final.stat().st_mtime_ns == kept   # the zoo was kept, not retrained
    assert (root / "_build" / "html" / "index.html").exists()
