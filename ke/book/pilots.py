"""Pilots of the model system: small presets (one model each, calibration world and seeds) computed together,
then judged by the validity criteria (ke.book.validity) into the table of the book page "How the model system
was chosen" (book/pilots.json). Every family given is computed and shown, failures included."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..miniature.pretrain import MARKER
from ..storage import write_json_atomically
from . import validity
from .build import STAGES, compute_stages
from .plan import make_plan
from .presets import load_preset


def run_pilots(files: list[str], out: Path, jobs: int = 2, progress: bool = True) -> dict:
    """Compute every family's plan stage by stage (all families' pretraining side by side, then all measurements,
    ...), then write one row per family, with its provenance, to `out` (rows of families computed earlier and not
    given are kept)."""
    presets = [load_preset(f) for f in files]
    plans = [make_plan(p) for p in presets]
    stages = [[] for _ in STAGES]
    for plan in plans:
        for joined, items in zip(stages, plan.work()):
            joined += [i for i in items if i not in joined]   # the shared world once
    compute_stages(stages, jobs, progress, "pilots")
    table = json.loads(out.read_text()) if out.exists() else {"criteria": validity.CRITERIA, "families": {}}
    made = provenance()                                       # per row: families may be computed in separate runs
    for preset, plan in zip(presets, plans):
        table["families"][preset.primary] = {**family_row(preset, plan), "provenance": made}
    table["criteria"] = validity.CRITERIA
    write_json_atomically(table, out)
    return table


def family_row(preset, plan) -> dict:
    """One row of the pilots' table: the family's configuration, its regime, its cost and its validity."""
    model = preset.primary
    run = next(r for r in plan.pretraining if r.model == model)
    cfg = run.config
    final = json.loads((run.out_dir / f"step{cfg.steps}" / MARKER).read_text())
    seconds = [(r.out_dir / f"step{cfg.steps}").stat().st_mtime - (r.out_dir / "step0").stat().st_mtime
               for r in plan.pretraining if r.model == model]
    tokens_per_step = cfg.batch_size * cfg.seq_len
    corpus_tokens = final["regime"]["tokens"] / final["regime"]["epochs"]
    window = tokens_per_step / (cfg.lr * cfg.weight_decay) / corpus_tokens if cfg.weight_decay else float("inf")
    return {"file": family_file(preset.source, preset.root),
            "description": _description(preset.source), "world_people": preset.world.num_people,
            "tie_embeddings": cfg.tie_embeddings, "weight_decay": cfg.weight_decay, "steps": cfg.steps,
            "tokens": final["regime"]["tokens"], "tokens_per_parameter": final["regime"]["tokens_per_parameter"],
            "S": final["regime"]["weight_decay_efolds"], "epochs": final["regime"]["epochs"],
            "window_passes": window, "final_loss": final["loss"], "pretrain_seconds": seconds,
            **validity.model_validity(plan, model)}


def family_file(source, root) -> str:
    """The family's YAML as the table names it: relative to the project root, also when it lies outside it."""
    return os.path.relpath(Path(source).resolve(), Path(root).resolve())


def provenance() -> dict:
    """Where and with which code the table was written."""
    import platform
    import subprocess
    import time

    from .build import matmul_rate
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {"command": "ke pilots " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "ke pilots", "commit": commit,
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "matmul_gflops_one_thread": round(matmul_rate(), 1)}


def _description(path: Path) -> str:
    """The family file's opening comment: why it was tried."""
    lines = [line[1:].strip() for line in Path(path).read_text().splitlines() if line.startswith("#")]
    return " ".join(lines)
