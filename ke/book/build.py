"""Build the book: resolve the preset into a plan, compute every planned item (world, zoo, measurements,
resuscitated checkpoints, continual runs) in parallel processes, execute the notebooks with Papermill (one page
per checkpoint, then the chapters, which only read cached results), and render them with Jupyter Book.

The sources in book/ are never modified: executed copies go to _build/stage/, a mirror of the book that
Jupyter Book renders with execution off. Everything computed is cached under the preset's run_dir, so an
interrupted build (Ctrl-C stops it within seconds, workers and kernels included) resumes where it stopped.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import yaml

from ..errors import Interrupted, UserError
from .execute import execute
from .items import Plan
from .plan import ENTROPY_VARIANTS, make_plan
from .presets import load_preset

CHECKPOINT_TEMPLATE = "book/checkpoint.ipynb"  # executed once per analysed checkpoint (first seed of each model)
KERNEL = "ke"                                  # the kernelspec the build writes: this very Python


def chapter_notebooks(root: Path) -> list[str]:
    """Notebooks listed in _toc.yml, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]] + [entry["file"] for part in toc.get("parts", [toc]) for entry in part.get("chapters", [])
                             if "file" in entry]
    return [f + ".ipynb" for f in files if (root / f"{f}.ipynb").exists()]


def write_kernel(root: Path) -> Path:
    """A kernelspec that runs this Python (the project's environment), found first through JUPYTER_PATH, so the
    pages never run in whatever `python3` kernel the user happens to have installed."""
    folder = root / "_build" / "jupyter"
    spec = folder / "kernels" / KERNEL / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    # log level ERROR: ipykernel >= 7 warns on every start that its local TCP sockets are unencrypted
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--IPKernelApp.log_level=ERROR"]
    spec.write_text(json.dumps({"argv": argv,
                                "display_name": "Python (ke)", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder), *filter(None, [os.environ.get("JUPYTER_PATH")])])
    return folder


def execute_notebook(root: Path, template: str, output: Path, parameters: dict, force: bool = False,
                     title: str | None = None, inputs: tuple[Path, ...] = ()) -> bool:
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
    partial = output.with_name(f".tmp-{output.name}")
    try:
        papermill.execute_notebook(str(source), str(partial), parameters=parameters, cwd=str(source.parent),
                                   kernel_name=KERNEL, progress_bar=False)
    except papermill.PapermillExecutionError as error:
        raise UserError(f"page {template} {parameters} failed in cell {error.exec_count} with {error.ename}: "
                        f"{error.evalue}; the executed copy {partial} shows the traceback.") from None
    finish(partial, title)
    os.replace(partial, output)  # a page that was interrupted never looks executed
    return True


SHOWN = {"injected-parameters", "remove-cell", "remove-input", "hide-input"}   # tags that already decide


def _caption(cell, label: str, heading: str) -> list:
    """The cell, made a numbered figure named `label`-figure and captioned by `heading` when its first displayed
    output is its only image; the outputs after the image move to a cell of their own (myst-nb captions every
    displayed output of a cell). Returns the cells that replace it."""
    import nbformat
    shown = [i for i, o in enumerate(cell.get("outputs", []))
             if o.get("output_type") in ("display_data", "execute_result")]
    images = [i for i in shown if "image/png" in cell.outputs[i].get("data", {})]
    if not shown or images != shown[:1]:
        return [cell]
    rest = cell.outputs[shown[0] + 1:]
    cell.outputs = cell.outputs[:shown[0] + 1]
    paper = re.match(r"(Figures? \d+[^:]*): (.+)", heading)   # "Figure 4: what" -> "What (paper: Figure 4)"
    caption = f"{paper[2][:1].upper()}{paper[2][1:]} (paper: {paper[1]})" if paper else heading
    cell.metadata["mystnb"] = {"figure": {"name": f"{label}-figure", "caption": caption}}
    if not rest:
        return [cell]
    # (myst-nb skips a cell without source, outputs and all)
    after = nbformat.v4.new_code_cell("# the outputs after the figure", metadata={"tags": ["remove-input"]},
                                      outputs=rest)
    after["id"] = f"{cell.get('id', 'cell')}-outputs"[:64]
    return [cell, after]


def finish(notebook: Path, title: str | None = None) -> None:
    """The book shows the parameters Papermill injected, not the template's defaults they override; every other
    code cell is folded (its output shows, its source on request); the tables' numbers show in their short form
    (the interval's detail in a tooltip); the one figure of a labelled "Figure N" section becomes a numbered
    figure captioned by the section's heading; a page executed from a template gets its own title."""
    import nbformat

    from .summary import SECTION, short
    nb = nbformat.read(notebook, as_version=4)
    if title:
        first = next(c for c in nb.cells if c.cell_type == "markdown")
        first.source = "\n".join([f"# {title}"] + first.source.splitlines()[1:])
    cells, section = [], None   # section: (label, heading) of a labelled "## Figure ..." cell just before
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found = SECTION.match(cell.source)
            section = (found["label"], found["heading"]) if found else None
            cells.append(cell)
        elif section:
            cells += _caption(cell, *section)
            section = None
        else:
            cells.append(cell)
    nb.cells = cells
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
        elif cell.cell_type == "code" and not SHOWN & set(tags):
            cell.metadata["tags"] = tags + ["hide-input"]
        for output in cell.get("outputs", []):
            if "text/markdown" in output.get("data", {}):
                output["data"]["text/markdown"] = short(output["data"]["text/markdown"])
    nbformat.write(nb, notebook)


# ----------------------------------------------------------------------------------------------- parallel work

def _init_worker(threads: int, gpus: list[str], started) -> None:
    """Workers leave Ctrl-C to the main process, which stops them all (a worker that died of SIGINT on its own
    would be silently replaced by the pool and its task lost). With GPUs, worker i sees only the i-th (mod their
    number) of the visible GPUs, so `--jobs N` on N GPUs runs one job per GPU (set before CUDA initialises)."""
    if gpus:
        with started.get_lock():
            index, started.value = started.value, started.value + 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    import datasets
    import torch

    from ..models import quiet_transformers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.filterwarnings("ignore", message=".*longer than seq_len.*")  # counted on the pages
    torch.set_num_threads(threads)
    datasets.disable_progress_bars()   # the bar of the main process is the one to watch
    quiet_transformers()


def _call(task):
    function, args = task
    return function(*args)


def run_parallel(tasks: list[tuple], jobs: int, desc: str, progress: bool = True, chunk: int = 1) -> list:
    """Run (function, args) tasks `jobs` at a time in fresh processes (one thread each when jobs > 1), with a
    progress bar; the first failure stops the rest (finished tasks stay cached) and is raised here.
    On Ctrl-C the workers are terminated at once. `chunk` consecutive tasks go to the same worker."""
    from tqdm import tqdm

    if not tasks:
        return []
    if jobs <= 1 or len(tasks) == 1:
        return [_call(t) for t in tqdm(tasks, desc=desc, disable=not progress)]
    import torch

    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [g for g in visible.split(",") if g] if visible else [str(i) for i in range(torch.cuda.device_count())]
    pool = context.Pool(min(jobs, len(tasks)), _init_worker, (threads, gpus, context.Value("i", 0)))
    try:
        results = list(tqdm(pool.imap(_call, tasks, chunksize=chunk), total=len(tasks), desc=desc,
                            disable=not progress))
    except BaseException:
        pool.terminate()   # after a failure or Ctrl-C: stop the running and queued tasks now
        raise
    else:
        pool.close()       # let the workers exit on their own, so that they release what they hold
    finally:
        pool.join()
    return results


STAGES = ("world", "pretraining", "measurements", "resuscitated checkpoints", "continual runs")  # Plan.work()'s


# glibc hands freed blocks back to the system and maps them anew on the next allocation, so every training step and
# every loaded model faults its tensors' pages in again. On a 150-step pretraining run of the 1B role: 1.32 million
# minor page faults and 3.0 s of system time for 18.5 s of user time by default, 60 thousand and 0.2 s with these
# settings (benchmarks/README.md). Workers and kernels inherit them (glibc reads them when a process starts).
ALLOCATOR = {"MALLOC_TRIM_THRESHOLD_": str(4 << 30), "MALLOC_TOP_PAD_": str(256 << 20),
             "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}


def keep_freed_memory() -> None:
    """Set ALLOCATOR for the processes started from here on (a value the user set is kept)."""
    for name, value in ALLOCATOR.items():
        os.environ.setdefault(name, value)


def matmul_rate(seconds: float = 0.5, n: int = 512) -> float:
    """This machine's float32 matrix-multiply rate on one thread, in GFLOP/s: printed beside build times, so that
    they compare across machines."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b   # warm up
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            a @ b
            count += 1
        return 2 * n ** 3 * count / (time.perf_counter() - started) / 1e9
    finally:
        torch.set_num_threads(threads)


def compute(plan: Plan, jobs: int, progress: bool = True) -> dict[str, float]:
    """Every planned item, stage by stage (a stage only needs earlier ones), `jobs` at a time."""
    return compute_stages(plan.work(), jobs, progress)


def compute_stages(stages: list[list], jobs: int, progress: bool = True, label: str = "book") -> dict[str, float]:
    """Items given as Plan.work()'s stages (those of several plans may be joined), stage by stage; returns each
    stage's seconds."""
    keep_freed_memory()
    seconds = {}
    for name, items in zip(STAGES, stages):
        started = time.time()
        # a checkpoint's measurements are consecutive: a chunk of them shares one loaded model in one worker
        chunk = 1 + len(ENTROPY_VARIANTS) if name == "measurements" else 1
        run_parallel([(execute, (item,)) for item in items], jobs if name != "world" else 1, name, progress, chunk)
        seconds[name] = time.time() - started
        if items:
            print(f"[{label}] {len(items)} {name} ready in {seconds[name]:.0f} s", flush=True)
    return seconds


def done_count(plan: Plan) -> tuple[int, int]:
    """How many planned items have a finished artifact on disk (what an interrupted build keeps)."""
    from .. import continual, entropy, resuscitate
    from ..miniature import pretrain
    items = [item for stage in plan.work() for item in stage]
    marker = {"PretrainRun": lambda i: i.out_dir / f"step{i.config.steps}" / pretrain.MARKER,
              "Measurement": lambda i: i.out_dir / entropy.RESULT_FILE, "FactCheck": lambda i: i.out_path,
              "Resuscitation": lambda i: i.out_dir / resuscitate.RECIPE_FILE,
              "ContinualRun": lambda i: i.out_dir / continual.RESULT_FILE, "EntityPerplexity": lambda i: i.out_path,
              "WorldBuild": lambda i: i.world_dir / "world.json"}
    return sum(marker[type(i).__name__](i).exists() for i in items), len(items)


# ----------------------------------------------------------------------------------------------- the book

def build_book(name: str = "default", root: Path | None = None, warnings_as_errors: bool = False,
               force: bool = False, progress: bool = True, jobs: int = 2) -> Path:
    if not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs must be a positive integer (processes working side by side); got {jobs}.")
    preset = load_preset(name, root)
    root, plan = preset.root, make_plan(preset)
    print(f"[book] this machine multiplies float32 matrices at {matmul_rate():.0f} GFLOP/s on one thread", flush=True)
    started = time.time()
    try:
        seconds = compute(plan, jobs, progress)
        pages_started = time.time()
        index = _render(preset, plan, root, warnings_as_errors, force, jobs, progress, started)
        seconds["pages and HTML"] = time.time() - pages_started
    except KeyboardInterrupt:
        done, total = done_count(plan)
        raise Interrupted(f"interrupted after {time.time() - started:.0f} s: {done} of {total} computed items are "
                          f"kept under {preset.run_dir}; run the same command again to resume.") from None
    print(f"[book] built {index} in {time.time() - started:.0f} s (" +
          ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items()) + ")", flush=True)
    return index


def _render(preset, plan: Plan, root: Path, warnings_as_errors: bool, force: bool, jobs: int, progress: bool,
            started: float) -> Path:
    inputs = (preset.source, *Path(__file__).parents[1].rglob("*.py"))  # a changed preset or library reruns pages
    write_kernel(root)
    stage = root / "_build" / "stage"
    (stage / "book").mkdir(parents=True, exist_ok=True)
    for page in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / page, stage / page)
    for page in (root / "book").iterdir():
        if page.is_dir() and page.name.startswith("_"):   # _static/ and the like
            shutil.copytree(page, stage / "book" / page.name, dirs_exist_ok=True)
        elif page.suffix in (".md", ".bib", ".png", ".svg", ".json"):
            shutil.copy2(page, stage / "book" / page.name)

    pages = {stage / "book" / "checkpoints" / f"{ref.model}-step{ref.step}.ipynb":
             ({"name": preset.name, "model": ref.model, "step": ref.step}, f"{plan.labels[ref.model]}, step {ref.step}")
             for model in plan.models for ref in plan.checkpoints[(model, plan.seeds(model)[0])]}
    for stale in (stage / "book" / "checkpoints").glob("*.ipynb"):
        if stale not in pages:
            stale.unlink()  # a checkpoint of another preset
    tasks = [(execute_notebook, (root, CHECKPOINT_TEMPLATE, out, parameters, force, title, inputs))
             for out, (parameters, title) in pages.items()]
    tasks += [(execute_notebook, (root, notebook, stage / notebook, {"name": preset.name}, force, None, inputs))
              for notebook in chapter_notebooks(root)]
    ran = run_parallel(tasks, jobs, "pages", progress)
    print(f"[book] {sum(ran)} of {len(ran)} pages executed, the others were current "
          f"({time.time() - started:.0f} s)", flush=True)

    from . import summary
    recorded = summary.collect(plan.run_dir, [Path(n).stem for n in chapter_notebooks(root)])
    if preset.name == "default":   # the README quotes the default book: book/summary.json and its block
        summary.write(recorded, root)
    # the results at a glance, from this preset's recorded claims (staged too: the browser check compares them)
    (stage / "book" / "summary.json").write_text(json.dumps(recorded, indent=1, ensure_ascii=False))
    for page in (stage / "book").glob("*.md"):
        summary.fill(page, recorded)

    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(stage), "--path-output", str(root)]
    if warnings_as_errors:
        command.append("-W")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], file=sys.stderr)
        raise UserError("jupyter-book build failed (its output is above); fix the page it names and run again.")
    return root / "_build" / "html" / "index.html"


def export_figure(notebook: Path, heading: str, out: Path) -> None:
    """Save the first image that follows the markdown cell whose heading line contains `heading` in an executed
    notebook (the README's figure comes from the executed entropy chapter)."""
    import base64

    import nbformat
    cells = nbformat.read(notebook, as_version=4).cells
    for i, cell in enumerate(cells):
        title = next((line for line in cell.source.splitlines() if line.startswith("#")), "")  # after a label
        if cell.cell_type == "markdown" and heading in title:
            for later in cells[i + 1:]:
                for output in later.get("outputs", []):
                    if "image/png" in output.get("data", {}):
                        Path(out).write_bytes(base64.b64decode(output["data"]["image/png"]))
                        return
    raise UserError(f"{notebook} has no image after a heading containing {heading!r}; run `make book` first.")
