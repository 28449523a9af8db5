"""The book reads well offline: clean notebook sources, offline maths and the table CSS in _config.yml, a tiny
Jupyter Book built with them, and the headless-browser check (.ci/browser_check.py) on hand-written pages."""
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import unavailable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".ci"))
import browser_check  # noqa: E402

OFFLINE_MATHJAX = "sphinx-mathjax-offline"
WIDE = 16  # columns of the wide test tables: wider than the text column at any font size


def mathjax_files() -> Path:
    """The MathJax 3 distribution that the offline extension copies into the build."""
    return Path(importlib.import_module(OFFLINE_MATHJAX).__file__).parent / "static" / "mathjax"


def need_chromium() -> None:
    if browser_check.chromium() is None:
        unavailable("chromium is not installed here (.ci/run installs it: apt-get install chromium)")


def run_check(path: Path, shots: Path, *options: str) -> tuple[int, str]:
    """The browser check as CI runs it: (exit status, output)."""
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "browser_check.py"), str(path), str(shots), *options],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def page_line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if re.match(rf"(ok  |FAIL) {re.escape(name)}(:|$)", line))


# ------------------------------------------------------------------------------------------- sources, config
def test_notebook_sources_carry_no_outputs_and_no_execution_counts():
    """Papermill executes copies under _build/; the sources in book/ stay clean (small diffs, no stale
    numbers)."""
    notebooks = sorted((ROOT / "book").rglob("*.ipynb"))
    assert notebooks
    dirty = []
    for notebook in notebooks:
        nb = json.loads(notebook.read_text())
        name = notebook.relative_to(ROOT)
        if "papermill" in nb["metadata"]:
            dirty.append(f"{name}: papermill metadata (an executed copy)")
        for number, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            if cell.get("outputs"):
                dirty.append(f"{name} cell {number}: {len(cell['outputs'])} output(s)")
            if cell.get("execution_count") is not None:
                dirty.append(f"{name} cell {number}: execution count {cell['execution_count']}")
            if "papermill" in cell.get("metadata", {}) or "execution" in cell.get("metadata", {}):
                dirty.append(f"{name} cell {number}: execution metadata")
    assert not dirty, "clear the outputs of: " + "; ".join(dirty)


def test_config_serves_mathjax_from_the_build_and_loads_the_table_css():
    """What the offline maths and the wide tables depend on, as Jupyter Book 1.x turns _config.yml into the
    Sphinx configuration."""
    from jupyter_book.config import get_final_config
    config, _ = get_final_config(user_yaml=ROOT / "_config.yml", cli_config={"latex_individualpages": False},
                                 sourcedir=ROOT)
    assert OFFLINE_MATHJAX in config["extensions"]
    assert (mathjax_files() / "tex-chtml.js").is_file()   # what the extension points mathjax_path to
    assert (mathjax_files() / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").is_file()
    assert not config.get("mathjax_path"), "a mathjax_path in _config.yml overrides the offline copy"
    static = [ROOT / folder for folder in config["html_static_path"]]
    assert ROOT / "book" / "_static" in static
    assert config["html_css_files"]
    for css in config["html_css_files"]:
        file = next((folder / css for folder in static if (folder / css).is_file()), None)
        assert file is not None, f"{css} is in html_css_files but in no html_static_path folder"
    rules = "".join((ROOT / "book" / "_static" / css).read_text() for css in config["html_css_files"])
    assert re.search(r"pst-scrollable-table-container[^{]*\{[^}]*overflow-x:\s*auto", rules, re.S)
    assert re.search(r"cell_output \.output[^{]*\{[^}]*overflow-x:\s*auto", rules, re.S)



def test_the_browser_check_knows_the_figures_smallest_text():
    from ke.book import plots
    assert browser_check.FIGURE_TEXT_PX == plots.SMALLEST_PT * plots.DPI / 72
    assert plots.plt.rcParams["legend.fontsize"] == plots.SMALLEST_PT
    assert min(v for k, v in plots.STYLE.items() if k.endswith("size")) == plots.SMALLEST_PT


def test_papermill_documents_every_parameter_of_every_notebook():
    """`papermill --help-notebook book/X.ipynb` names each parameter with its type, default and a description
    (the parameters cells carry annotations and comments)."""
    import ast
    notebooks = [n for n in sorted((ROOT / "book").glob("*.ipynb"))
                 if any("parameters" in c["metadata"].get("tags", []) for c in json.loads(n.read_text())["cells"])]
    assert len(notebooks) >= 5
    for notebook in notebooks:
        cell = next(c for c in json.loads(notebook.read_text())["cells"]
                    if "parameters" in c["metadata"].get("tags", []))
        assigned = [node.target.id if isinstance(node, ast.AnnAssign) else node.targets[0].id
                    for node in ast.parse("".join(cell["source"])).body]
        done = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(notebook)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        text = done.stdout.split("Parameters inferred for notebook", 1)[1]
        documented = re.findall(r"^  (\w+): (\S+) \(default [^)]*\)\s*(.*)$", text, re.M)
        assert [name for name, _, _ in documented] == assigned, (notebook.name, text)
        for name, kind, help_text in documented:
            # a long signature puts the description on the next line
            description = help_text or text.split(f"  {name}: ", 1)[1].splitlines()[1].strip()
            assert kind != "None" and "Unknown" not in kind, (notebook.name, name, kind)
            assert len(description.split()) >= 4, (notebook.name, name, description)
        assert "Unknown type" not in text


def test_the_build_folds_code_and_shortens_intervals_on_executed_pages(tmp_path):
    """ke.book.build.finish on an executed notebook: every code cell folded except the injected parameters; the
    template's parameters cell removed; a Markdown output's 'x ± y (sd over n seeds; range ...)' shortened."""
    import nbformat
    from ke.book.build import finish
    cells = [nbformat.v4.new_markdown_cell("# Chapter"),
             nbformat.v4.new_code_cell("name = 'x'", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("name = 'smoke'", metadata={"tags": ["injected-parameters"]}),
             nbformat.v4.new_code_cell("import ke", metadata={"tags": ["hide-input"]}),
             nbformat.v4.new_code_cell("Markdown(table)", outputs=[nbformat.v4.new_output(
                 "display_data", {"text/markdown": "| a |\n|---|\n| -0.157 ± 0.063 (sd over 3 seeds; range -0.2 … -0.1) |",
                                  "text/plain": "<Markdown>"})]),
             nbformat.v4.new_code_cell("plot()", metadata={"tags": ["remove-input"]}),
             nbformat.v4.new_markdown_cell("(entropy-fig-2)=\n## Figure 2: entropy against training\n\nText."),
             nbformat.v4.new_code_cell("plot()\nMarkdown(text)", outputs=[
                 nbformat.v4.new_output("stream", name="stdout", text="measured\n"),
                 nbformat.v4.new_output("display_data", {"image/png": "iVBO", "text/plain": "<Figure>"}),
                 nbformat.v4.new_output("execute_result", {"text/markdown": "**Ours:** x", "text/plain": "x"})]),
             nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output("display_data", {"image/png": "iVBO"})])]
    path = tmp_path / "page.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    finish(path)
    done = nbformat.read(path, as_version=4).cells
    assert [c.metadata.get("tags", []) for c in done] == [
        [], ["parameters", "remove-cell"], ["injected-parameters"], ["hide-input"], ["hide-input"], ["remove-input"],
        [], ["hide-input"], ["remove-input"], ["hide-input"]]
    # the labelled section's figure is a named, captioned figure; the outputs after it move to a cell of their
    # own (no source shown); a figure in a later cell is not captioned
    assert done[7].metadata["mystnb"] == {"figure": {"name": "entropy-fig-2-figure",
                                                     "caption": "Entropy against training (paper: Figure 2)"}}
    assert [o["output_type"] for o in done[7].outputs] == ["stream", "display_data"]
    assert done[8].source.startswith("#") and done[8].outputs[0]["data"]["text/markdown"] == "**Ours:** x"
    assert "mystnb" not in done[8].metadata and "mystnb" not in done[9].metadata
    assert done[4].outputs[0]["data"]["text/markdown"].endswith(
        '| <span class="detail" title="sd over 3 seeds; range -0.2 … -0.1">-0.157 ± 0.063</span> |')


# ------------------------------------------------------------------------------------------- a tiny book
def wide_markdown_table(label: str) -> str:
    head = "| " + " | ".join(f"{label} column {i}" for i in range(WIDE)) + " |"
    return "\n".join([head, "|" + "---|" * WIDE, "| " + " | ".join(f"{i}.0000" for i in range(WIDE)) + " |"])


# A ten-column table of the resuscitation chapter: 790 px wide in the theme's style, wider than the 690 px
# text column at a 1280 px window; tables.css's smaller cells make it fit (590 px).
CHAPTER_TABLE = "\n".join([
    "| run | entropy (nats) | K at step 0 | P at step 0 (%) | A own (%) | F own (%) | A vs unmodified (%) "
    "| F vs unmodified (%) | K after CL | P after CL (%) |",
    "|---" * 10 + "|",
    "| original | 8.0568 | -5.1042 | 20.8 | 0.3 | -0.0 | 0.3 | -0.0 | -5.0909 | 20.8 |",
    "| q = 0.5 | 8.0206 | -5.1033 | 20.8 | 0.2 | -0.0 | 0.3 | -0.0 | -5.0908 | 20.8 |"])


def wide_html_table() -> str:
    cells = "".join(f"<th>html column {i}</th>" for i in range(WIDE))
    return f'<table class="dataframe"><thead><tr>{cells}</tr></thead><tbody><tr>' + \
        "".join(f"<td>{i}.0000</td>" for i in range(WIDE)) + "</tr></tbody></table>"


def markdown_cell(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def code_cell(source: str, outputs: list[dict]) -> dict:
    return {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": source, "outputs": outputs}


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory) -> Path:
    """A two-page Jupyter Book with the project's _config.yml and book/_static: display and inline maths, a
    chapter's ten-column table, a wider Markdown table, and an executed notebook whose outputs are a wide Markdown table and a wide HTML table.
    Built the way `ke book` builds (execution off, warnings are errors)."""
    import shutil
    root = tmp_path_factory.mktemp("tiny_book")
    shutil.copy2(ROOT / "_config.yml", root / "_config.yml")
    shutil.copytree(ROOT / "book" / "_static", root / "book" / "_static")
    (root / "_toc.yml").write_text(yaml.safe_dump(
        {"format": "jb-book", "root": "book/intro", "chapters": [{"file": "book/outputs"}]}))
    (root / "book" / "intro.md").write_text(
        "# Maths\n\nInline $H = -\\sum_i p_i \\ln p_i$ and display:\n\n$$\n\\mathcal A = "
        "\\frac{\\mathcal K_{CL} - \\mathcal K_{PT}}{|\\mathcal K_{PT}|}\n$$\n\n" + wide_markdown_table("md") + "\n\n"
        + CHAPTER_TABLE)
    notebook = {"nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "cells": [markdown_cell("# Outputs\n\nThe memory coefficients $C = f(xK^\\top)$."),
                          code_cell("Markdown(table)", [{"output_type": "display_data", "metadata": {},
                                                         "data": {"text/markdown": wide_markdown_table("output")}}]),
                          code_cell("frame", [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                                               "data": {"text/html": wide_html_table(), "text/plain": "frame"}}])]}
    (root / "book" / "outputs.ipynb").write_text(json.dumps(notebook))
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    done = subprocess.run([str(jupyter_book), "build", str(root), "-W"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "_build" / "html"


def test_tiny_book_references_only_local_mathjax_and_the_css(tiny_book):
    assert (tiny_book / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (tiny_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    assert (tiny_book / "_static" / "tables.css").is_file()
    for page in ("book/intro.html", "book/outputs.html"):
        html = (tiny_book / page).read_text()
        scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
        assert [s for s in scripts if "mathjax" in s.lower()] == ["../_static/mathjax/tex-chtml.js"], scripts
        remote = re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="((?:https?:)?//[^"]+)"', html)
        assert remote == [], f"{page} loads {remote}"
        assert re.search(r'<link[^>]*href="\.\./_static/tables\.css', html), f"{page} does not link tables.css"


def test_tiny_book_renders_offline_with_wide_tables_scrolling(tiny_book, tmp_path):
    need_chromium()
    status, output = run_check(tiny_book, tmp_path)
    assert status == 0, output
    intro, outputs = page_line(output, "book/intro.html"), page_line(output, "book/outputs.html")
    assert re.search(r"equations (\d+)/\1 rendered", intro) and "equations 2/2" in intro, intro
    assert "equations 1/1" in outputs, outputs
    # the chapter's table fits; the 16-column tables (Markdown, Markdown output, HTML output) scroll sideways
    assert "tables 2, 1 wider than the column (scrolling)" in intro, intro
    assert "tables 2, 2 wider than the column (scrolling)" in outputs, outputs
    assert (tmp_path / "book_intro.png").is_file() and (tmp_path / "book_outputs.png").is_file()


# ------------------------------------------------------------------------------------------- the check itself
GOOD = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{name}</title>
<script defer src="{mathjax}"></script></head>
<body><article><h1>{name}</h1><p>A figure: <img src="{image}" alt="figure"></p>
<p>An equation: <span class="math notranslate nohighlight">{tex}</span>.</p>{extra}</article></body></html>
"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    """A folder of tiny hand-written pages: one that renders, and one per way of failing."""
    import matplotlib.image
    import numpy as np
    folder = tmp_path_factory.mktemp("pages")
    (folder / "mathjax").symlink_to(mathjax_files(), target_is_directory=True)
    matplotlib.image.imsave(folder / "figure.png", np.outer(np.linspace(0, 1, 20), np.linspace(0, 1, 40)))
    ok = dict(mathjax="mathjax/tex-chtml.js", image="figure.png", tex=r"\(H = -\sum_i p_i \ln p_i\)", extra="")
    variants = {
        "good": {},
        "missing_image": {"image": "nowhere.png"},
        "cdn_mathjax": {"mathjax": "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"},
        "tex_error": {"tex": r"\(\frac{1}\)"},
        # MyST marks its sections mathjax_ignore, so MathJax typesets only the .math elements there
        "raw_dollars": {"extra": '<div class="tex2jax_ignore mathjax_ignore"><p>As typed: $$x^2$$</p></div>'},
        "cut_cell": {"extra": '<div class="mathjax_ignore"><p>$(\\mathcal K_{CL} - \\mathcal K_{PT}) /</p></div>'},
        "wide_table": {"extra": "<table style='width: 3000px'><tr><td>wide</td></tr></table>"},
        # a folded code cell whose long line is cut at the column's edge (its box neither wraps nor scrolls)
        "cut_code": {"extra": "<details><summary>code</summary><pre style='overflow: hidden'>"
                              + "x = 1  # " + "long " * 300 + "</pre></details>"},
        "small_figure": {"extra": '<div class="cell_output"><img src="figure.png" style="width: 30px"></div>'},
    }
    for name, change in variants.items():
        (folder / f"{name}.html").write_text(GOOD.format(name=name, **{**ok, **change}))
    return folder


def test_browser_check_passes_a_good_page_and_names_every_failure(pages, tmp_path):
    need_chromium()
    status, output = run_check(pages, tmp_path)
    assert status == 1, output
    good = page_line(output, "good.html")
    assert good == ("ok   good.html: figures 1/1 loaded, equations 1/1 rendered, tables 0, "
                    "0 wider than the column (scrolling)"), output
    problems = {name: [line for line in output.splitlines() if line.startswith(f"{name}.html: ")]
                for name in ("good", "missing_image", "cdn_mathjax", "tex_error", "raw_dollars", "cut_cell",
                             "wide_table", "cut_code", "small_figure")}
    assert problems.pop("good") == []
    expected = {"missing_image": ["1 of 1 images did not load, e.g. nowhere.png", "local file(s) failed to load"],
                "cdn_mathjax": ["resource(s) from the network, e.g. https://cdn.jsdelivr.net",
                                "MathJax did not start", "1 of 1 equations not rendered", "raw TeX '\\\\('"],
                "tex_error": ["1 TeX error(s)"],
                "raw_dollars": ["raw TeX '$$' left in the text"],
                "cut_cell": ["raw TeX '$' left in the text: ", "$(\\\\mathcal K_{CL}"],
                "wide_table": ["1 table(s) stick out of the text column",
                               "px wider than the window (it scrolls sideways)"],
                "cut_code": ["1 code block(s) cut at the column's edge", "x = 1  # long long"],
                "small_figure": ["1 figure(s) shown at 75% of their size"]}
    for name, needles in expected.items():
        assert page_line(output, f"{name}.html").startswith("FAIL"), output
        for needle in needles:
            assert any(needle in line for line in problems[name]), (name, needle, problems[name])
    screenshot = tmp_path / "good.png"
    import matplotlib.image
    assert matplotlib.image.imread(str(screenshot)).shape[:2] == (browser_check.HEIGHT, browser_check.WIDTH)


def test_browser_check_compares_the_glance_with_summary_json_and_follows_every_badge(tmp_path):
    """The glance table's rows (chapter from the badge's page, figure, claim, verdict) must equal the claims of
    summary.json, in order; every badge must reach an existing anchor."""
    need_chromium()
    book = tmp_path / "html"
    book.mkdir()
    (book / "mathjax").symlink_to(mathjax_files(), target_is_directory=True)
    import matplotlib.image
    import numpy as np
    matplotlib.image.imsave(book / "figure.png", np.outer(np.linspace(0, 1, 20), np.linspace(0, 1, 40)))
    ok = dict(mathjax="mathjax/tex-chtml.js", image="figure.png", tex=r"\(x\)")
    (book / "entropy.html").write_text(GOOD.format(name="entropy", extra='<h2 id="entropy-fig-2">Fig. 2</h2>', **ok))
    row = ('<tr><td>{figure}</td><td>{claim}</td><td>p</td><td>o</td>'
           '<td><a class="verdict" href="entropy.html#{anchor}">{verdict}</a></td></tr>')
    table = ("<table><thead><tr><th>figure</th><th>claim</th><th>paper</th><th>ours</th><th>verdict</th></tr></thead>"
             "<tbody>" + row.format(figure="Fig. 2", claim="entropy falls", anchor="entropy-fig-2", verdict="agrees")
             + row.format(figure="Fig. 3", claim="attention falls", anchor="nowhere", verdict="partly (1 of 2)")
             + "</tbody></table>")
    (book / "results.html").write_text(GOOD.format(name="results", extra=table, **ok))
    claims = [{"figure": "Fig. 2", "statement": "entropy falls", "paper": "", "ours": "", "verdict": "agrees"},
              {"figure": "Fig. 3", "statement": "attention falls", "paper": "", "ours": "", "verdict": "partly (1 of 2)"}]
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"validity": {"model": "m"}, "entropy": {"claims": claims, "facts": {}}}))
    status, output = run_check(book, tmp_path / "shots", "--summary", str(summary))
    assert status == 1 and "glance 2 claims, badges 2" in page_line(output, "results.html"), output
    problems = [line for line in output.splitlines() if line.startswith("results.html: ")]
    assert problems == ["results.html: 1 verdict badge(s) link to no anchor, e.g. "
                        f"{(book / 'entropy.html').resolve().as_uri()}#nowhere"], output
    claims[1]["verdict"] = "agrees"
    summary.write_text(json.dumps({"entropy": {"claims": claims, "facts": {}}, "regime": {"claims": [], "facts": {}}}))
    status, output = run_check(book, tmp_path / "shots", "--summary", str(summary))
    assert "results.html: the glance table shows 2 claims, summary.json has 2; first difference at row 2: " \
        "('entropy', 'Fig. 3', 'attention falls', 'partly (1 of 2)') != " \
        "('entropy', 'Fig. 3', 'attention falls', 'agrees')" in output, output


def test_browser_check_reports_missing_chromium_and_missing_build(tmp_path, monkeypatch):
    monkeypatch.setattr(browser_check, "chromium", lambda: "/bin/true")
    assert browser_check.check(tmp_path / "nothing") == [
        f"{tmp_path / 'nothing'} does not exist (build the book first: make book)"]
    assert browser_check.check(tmp_path) == [f"{tmp_path} holds no HTML pages"]
    monkeypatch.setattr(browser_check, "chromium", lambda: None)
    assert browser_check.check(tmp_path) == ["chromium is not installed (apt-get install chromium)"]


# ------------------------------------------------------------------------------------------- the CI rule
def test_missing_shared_data_skips_here_and_fails_under_ci(tmp_path, monkeypatch):
    from conftest import require_shared
    monkeypatch.delenv("CI", raising=False)
    assert require_shared(tmp_path, "a folder") == tmp_path
    with pytest.raises(pytest.skip.Exception, match="is not at"):
        require_shared(tmp_path / "missing", "the paper's data")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must provide it"):
        require_shared(tmp_path / "missing", "the paper's data")


# ------------------------------------------------------------------------------------------- the printable book
def test_make_pdf_prints_every_page_with_typeset_maths(tiny_book, tmp_path):
    """`make pdf` (.ci/print_pdf.py) on the tiny book: one PDF holding both pages, the equations typeset by
    MathJax (no TeX source left in the text)."""
    import shutil
    need_chromium()
    if shutil.which("pdftotext") is None:
        unavailable("pdftotext is not installed here (apt-get install poppler-utils)")
    import print_pdf
    source = tiny_book.parents[1]
    page = print_pdf.single_page(source)
    out = tmp_path / "book.pdf"
    assert print_pdf.print_pdf(page, out) == 3   # the equations of the two pages, typeset
    assert out.read_bytes()[:5] == b"%PDF-"
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True).stdout
    for title in ("Maths", "Outputs"):
        assert title in text, title
    assert text.count("15.0") == 3, text   # the last column of each wide table: on paper, nothing is cut
    assert not [tex for tex in ("\\frac", "\\sum", "\\mathcal", "$$") if tex in text], text[:2000]
    assert "∑" in text or "Σ" in text, text[:2000]   # the display's sum sign, rendered


def test_make_pdf_without_chromium_says_what_to_install(tmp_path):
    """No browser on the PATH: one sentence naming it and how to install it, exit status 2, before any build."""
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "print_pdf.py"), str(tmp_path), str(tmp_path / "b.pdf")],
                          capture_output=True, text=True, timeout=120, env={"PATH": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "printing the PDF needs Chromium, which is not installed here: apt-get install chromium"]
    assert not (tmp_path / "b.pdf").exists()
