"""Build the book: train the zoo, execute the notebooks with Papermill (one per checkpoint), compute the
chapters' continual-learning runs, execute the chapters, and render the executed notebooks with Jupyter Book
into _build/html.

The sources in book/ are never modified: executed copies go to _build/stage/, a mirror of the book that
Jupyter Book renders with execution off.
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

from .config import load_preset
from .errors import UserError
from .zoo import build_zoo, checkpoints

CHECKPOINT_TEMPLATE = "book/checkpoint.ipynb"  # executed once per (model, checkpoint) of the preset


def chapter_notebooks(root: Path) -> list[str]:
    """Notebooks listed in _toc.yml, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]] + [entry["file"] for part in toc.get("parts", [toc]) for entry in part.get("chapters", [])
                             if "file" in entry]
    return [f + ".ipynb" for f in files if (root / f"{f}.ipynb").exists()]


def execute(root: Path, template: str, output: Path, parameters: dict, force: bool = False,
            title: str | None = None, inputs: list[Path] = ()) -> bool:
    """Run one notebook with Papermill unless a copy with the same parameters exists that is newer than the
    template and every file of `inputs` (the preset, the ke package)."""
    import papermill

    source = root / template
    newest_input = max(p.stat().st_mtime for p in [source, *inputs])
    if not force and output.exists() and output.stat().st_mtime > newest_input:
        stored = json.loads(output.read_text()).get("metadata", {}).get("papermill", {}).get("parameters")
        if stored == parameters:
            return False
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(source), str(output), parameters=parameters, cwd=str(source.parent),
                               kernel_name="python3", progress_bar=False)
    finish(output, title)
    return True


def finish(notebook: Path, title: str | None = None) -> None:
    """The book shows the parameters Papermill injected, not the template's defaults they override; a page
    executed from a template gets its own title."""
    import nbformat
    nb = nbformat.read(notebook, as_version=4)
    if title:
        first = next(c for c in nb.cells if c.cell_type == "markdown")
        first.source = "\n".join([f"# {title}"] + first.source.splitlines()[1:])
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    nbformat.write(nb, notebook)


def _init_worker(threads: int) -> None:
    import datasets
    import torch

    from .models import quiet_transformers
    torch.set_num_threads(threads)
    datasets.disable_progress_bars()   # the bar of compute_runs is the one to watch
    quiet_transformers()


def _run(name: str, root: Path, function: str, kwargs: dict) -> None:
    from . import experiments
    getattr(experiments, function)(load_preset(name, root), **kwargs)


def compute_runs(name: str, root: Path, jobs: int, progress: bool = True) -> None:
    """The chapters' continual-learning runs of preset `name`, `jobs` at a time, each with its share of the CPU
    threads (small models use two threads poorly: benchmarks/bench_parallel_runs.py). Finished runs are cached;
    the chapters then only read them. With one job the chapters compute the runs themselves, in order."""
    import os

    from tqdm import tqdm

    from . import experiments, interventions

    if jobs <= 1:
        return
    preset = load_preset(name, root)
    runs = {json.dumps([f, kw], sort_keys=True): (f, kw)
            for f, kw in experiments.planned_runs(preset) + interventions.planned_runs(preset)}
    started, threads = time.time(), max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(_run, name, root, f, kw) for f, kw in runs.values()]
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="continual runs",
                               disable=not progress):
                future.result()
        except BaseException:   # a failed run or Ctrl-C: do not start the queued ones (finished runs stay cached)
            for future in futures:
                future.cancel()
            raise
    print(f"[book] {len(runs)} continual runs ready in {time.time() - started:.0f} s", flush=True)


def build_book(name: str = "default", root: Path | None = None, warnings_as_errors: bool = False,
               force: bool = False, progress: bool = True, jobs: int = 2) -> Path:
    preset = load_preset(name, root)
    root = preset.root
    inputs = [preset.source, *Path(__file__).parent.glob("*.py")]  # a changed preset or library reruns the pages
    started = time.time()
    build_zoo(preset, progress=progress, jobs=jobs)
    print(f"[book] zoo ready ({time.time() - started:.0f} s)", flush=True)

    stage = root / "_build" / "stage"
    (stage / "book").mkdir(parents=True, exist_ok=True)
    for page in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / page, stage / page)
    for page in (root / "book").iterdir():
        if page.suffix in (".md", ".bib", ".png", ".svg"):
            shutil.copy2(page, stage / "book" / page.name)

    # Per-checkpoint notebooks are independent (each writes its own artifacts): run `jobs` at a time.
    runs = {stage / "book" / "checkpoints" / f"{key}-{c.name}.ipynb":
            ({"name": name, "model": key, "step": c.step}, f"{preset.models[key].label}, step {c.step}")
            for key in preset.models for c in checkpoints(preset, key)}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(execute, root, CHECKPOINT_TEMPLATE, out, parameters, force, title, inputs): out
                   for out, (parameters, title) in runs.items()}
        for future in as_completed(futures):
            print(f"[book] {'ran' if future.result() else 'kept'} {futures[future].relative_to(stage)} "
                  f"({time.time() - started:.0f} s)", flush=True)
    wanted = set(runs)
    for stale in (stage / "book" / "checkpoints").glob("*.ipynb"):
        if stale not in wanted:
            stale.unlink()  # a checkpoint of another preset
    if preset.continual:
        compute_runs(name, root, jobs, progress)
    for notebook in chapter_notebooks(root):  # in order: later chapters reuse earlier chapters' cached runs
        ran = execute(root, notebook, stage / notebook, {"name": name}, force, inputs=inputs)
        print(f"[book] {'ran' if ran else 'kept'} {notebook} ({time.time() - started:.0f} s)", flush=True)

    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(stage), "--path-output", str(root)]
    if warnings_as_errors:
        command.append("-W")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], file=sys.stderr)
        raise UserError("jupyter-book build failed (its output is above); fix the page it names and run again.")
    index = root / "_build" / "html" / "index.html"
    print(f"[book] built {index} in {time.time() - started:.0f} s", flush=True)
    return index


def export_figure(notebook: Path, heading: str, out: Path) -> None:
    """Save the first image that follows the markdown cell whose first line contains `heading` in an executed
    notebook (the README's figure comes from the executed entropy chapter)."""
    import base64

    import nbformat
    cells = nbformat.read(notebook, as_version=4).cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and heading in cell.source.splitlines()[0]:
            for later in cells[i + 1:]:
                for output in later.get("outputs", []):
                    if "image/png" in output.get("data", {}):
                        Path(out).write_bytes(base64.b64decode(output["data"]["image/png"]))
                        return
    raise UserError(f"{notebook} has no image after a heading containing {heading!r}; run `make book` first.")


def add_cli(subparsers):
    p = subparsers.add_parser("book", help="train the zoo, execute every notebook, build the HTML book")
    p.add_argument("--preset", default="default", help="name of parameters/<preset>.yaml")
    p.add_argument("--warnings-as-errors", action="store_true")
    p.add_argument("--force", action="store_true", help="re-execute notebooks even when their copy is current")
    p.add_argument("--jobs", type=int, default=2,
                   help="zoo models, per-checkpoint notebooks and continual runs computed in parallel")
    p.set_defaults(func=lambda args: build_book(args.preset, warnings_as_errors=args.warnings_as_errors,
                                                force=args.force, jobs=args.jobs))
