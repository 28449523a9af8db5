"""Figures of the book: one function per figure kind; each returns the matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .chapter_entropy import maximum
from .plan import from_initial_stage
from .validity import MIN_ACCURACY

STAGE_COLORS = {"initial": "tab:green", "mid": "tab:orange", "final": "tab:purple"}

# One style for every figure of the book. A figure is at most COLUMN inches wide, so that at DPI it fits the
# book's text column (about 750 px at a 1280 px window) without being scaled down; its smallest text
# (SMALLEST_PT, legends) is then SMALLEST_PT * DPI / 72 = 11 px on the page (.ci/browser_check.py checks the
# scale). Multi-panel figures wrap into rows of at most two panels, or stack.
COLUMN, DPI, SMALLEST_PT = 7.2, 100, 8
STYLE = {"figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": SMALLEST_PT, "figure.titlesize": 11}
plt.rcParams.update(STYLE)


def twin_axes(x_label: str, left_label: str, right_label: str, title: str = "", size=(COLUMN, 3.6)):
    fig, left = plt.subplots(figsize=size)
    right = left.twinx()
    left.set_xlabel(x_label)
    left.set_ylabel(left_label)
    right.set_ylabel(right_label)
    if title:
        left.set_title(title)
    return fig, left, right


def lines(series: list[dict], x_label: str, y_label: str, title: str = "", size=(COLUMN, 3.6), logx=False):
    """series: [{x, y, label, style?}] on one axis."""
    fig, ax = plt.subplots(figsize=size)
    for s in series:
        ax.plot(s["x"], s["y"], s.get("style", "o-"), label=s["label"], markersize=4)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if logx:
        ax.set_xscale("symlog", linthresh=10)
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def twin_lines(x, left: dict, right: dict, x_label: str, title: str = "", logx=False):
    """Two quantities with different ranges against the same x (the paper's dual-axis figures)."""
    fig, ax_l, ax_r = twin_axes(x_label, left["label"], right["label"], title)
    ax_l.plot(x, left["y"], "o-", color="tab:blue", markersize=4, label=left["label"])
    ax_r.plot(x, right["y"], "s--", color="tab:red", markersize=4, label=right["label"])
    ax_l.tick_params(axis="y", colors="tab:blue")
    ax_r.tick_params(axis="y", colors="tab:red")
    if logx:
        ax_l.set_xscale("symlog", linthresh=10)
    fig.legend(loc="upper right", bbox_to_anchor=(0.88, 0.88))
    fig.tight_layout()
    return fig


def coefficient_distributions(coefficients_by_stage: dict, entropies: dict, layer: int = -1):
    """Fig. 1 from data: the normalised mean coefficients of one layer, sorted, at initial / mid / final."""
    fig, axes = plt.subplots(1, len(coefficients_by_stage), figsize=(COLUMN, 2.8), sharey=True)
    for ax, (stage, cbar) in zip(np.atleast_1d(axes), coefficients_by_stage.items()):
        p = cbar[layer].double() / cbar[layer].double().sum()
        p = np.sort(p.numpy())[::-1]
        ax.bar(np.arange(len(p)), p, width=1.0, color=STAGE_COLORS.get(stage, "tab:gray"))
        ax.axhline(1 / len(p), color="black", lw=0.8, ls=":", label="uniform")
        ax.set_title(f"{stage}: H = {entropies[stage]:.3f}")
        ax.set_xlabel("memory slot (sorted)")
    np.atleast_1d(axes)[0].set_ylabel("share of mean |coefficient|")
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    return fig


def loss_curve(log: list[dict], title: str = ""):
    steps = [r["step"] for r in log]
    return twin_lines(steps, {"y": [r["loss"] for r in log], "label": "training loss (nats/token)"},
                      {"y": [r["lr"] for r in log], "label": "learning rate"}, "step", title)


# Resuscitation (Section 5): the paper's panels (a) A and F, (b) K and P, one small axis per quantity.
OUTCOME_AXES = {"A": "acquisition A (%) ↑", "F": "forgetting F (%) ↓", "K": "probe K after CL (log-prob/token) ↑",
                "P": "downstream P after CL (%) ↑"}


def intervention_grid(series: list[dict], x_label: str, title: str = "", references: list[dict] = (),
                      size=(COLUMN, 6.6)):
    """2 x 2 panels A, F / K, P. series: [{x, label, values: {A: [...], ...}, style?, color?}] (x may be strings:
    categories); a series lacking a quantity is not drawn there. references: [{label, values: {A: v, ...}, ls,
    color?}] drawn as horizontal lines (the paper's dashed original and dotted FFN resuscitation)."""
    fig, axes = plt.subplots(2, 2, figsize=size)
    categories = []
    for s in series:
        categories += [x for x in s["x"] if isinstance(x, str) and x not in categories]
    position = lambda x: categories.index(x) if isinstance(x, str) else x  # noqa: E731
    for ax, (quantity, label) in zip(axes.flat, OUTCOME_AXES.items()):
        for i, s in enumerate(series):
            if quantity not in s["values"]:
                continue
            y = [np.nan if v is None else v for v in s["values"][quantity]]
            ax.plot([position(x) for x in s["x"]], y, s.get("style", "o-"), color=s.get("color", f"C{i}"),
                    label=s["label"], markersize=5, markerfacecolor=s.get("face"))
        for r in references:
            if r["values"].get(quantity) is not None:
                ax.axhline(r["values"][quantity], ls=r.get("ls", "--"), color=r.get("color", "black"), lw=1.2,
                           label=r["label"])
        ax.set_ylabel(label)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        if categories:
            ax.set_xticks(range(len(categories)), categories)
    handles, names = {}, []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in handles:
                handles[n] = h
                names.append(n)
    fig.legend([handles[n] for n in names], names, loc="lower center", ncol=min(len(names), 2),
               bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(names) - 1) // 2), 1, 1))
    return fig


def star_panels(x, panels: list[dict], x_label: str, title: str = "", panel_height: float = 3.0):
    """Fig. 1's right side from data: one panel per quantity against the pretraining step, with markers for
    modified models, two panels to a row. panels: [{y, label, x?, x_label?, stars: [{x, y, label, marker?, face?}]}]
    (x: the panel's own steps)."""
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN, panel_height * nrows), squeeze=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        ax.plot(panel.get("x", x), panel["y"], "o-", color="tab:blue",
                markersize=4, label="original checkpoints")
        for star in panel.get("stars", []):
            ax.plot([star["x"]], [star["y"]], star.get("marker", "*"), markersize=14, color="tab:red",
                    markerfacecolor=star.get("face", "tab:red"), label=star["label"])
        ax.set_xlabel(panel.get("x_label", x_label))
        ax.set_ylabel(panel["label"])
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


QUANTITY_COLORS = {"A": "tab:blue", "F": "tab:red", "K": "tab:green", "P": "tab:purple", "entropy": "tab:brown"}


def twin_panels(panels: list[dict], x_label: str, title: str = "", ncols: int = 2, panel_height: float = 3.2):
    """Panels side by side (`ncols` to a row, the column's width), each with two y axes (the paper's Figs. 4,
    11-14). A panel is
    {"title", "left", "right" (axis labels), "x_label"?, "series": [{"x", "y", "label", "axis": "left" | "right",
    "color"?, "style"?}]}; None values in y are gaps. Each panel's legend lists the series of both axes."""
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN * (1 if ncols > 1 else 0.8), panel_height * nrows),
                             squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        right = ax.twinx()
        for s in panel["series"]:
            y = [np.nan if v is None else v for v in s["y"]]
            (right if s.get("axis") == "right" else ax).plot(s["x"], y, s.get("style", "o-"), color=s.get("color"),
                                                             label=s["label"], markersize=4)
        ax.set_xlabel(panel.get("x_label", x_label))
        ax.set_ylabel(panel["left"])
        right.set_ylabel(panel["right"])
        ax.set_title(panel.get("title", ""))
        handles, names = ax.get_legend_handles_labels()
        more, more_names = right.get_legend_handles_labels()
        ax.legend(handles + more, names + more_names, loc="upper center", bbox_to_anchor=(0.5, -0.22),
                  ncol=1 if ncols > 1 else 2, frameon=False)  # below the panel: never over the lines
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.96) if title else None)  # room for the suptitle
    return fig


def histograms(values: dict[str, list[float]], x_label: str, title: str = "", bins: int = 30):
    """Overlaid histograms on shared bins, one per label, each legend entry with n and the median."""
    fig, ax = plt.subplots(figsize=(COLUMN, 3.6))
    edges = np.histogram_bin_edges(np.concatenate([np.asarray(v, dtype=float) for v in values.values()]), bins)
    for label, v in values.items():
        ax.hist(v, bins=edges, alpha=0.55, label=f"{label} (n = {len(v)}, median {np.median(v):.1f})")
    ax.set_xlabel(x_label)
    ax.set_ylabel("documents")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- one per figure

def world_knowledge(series: dict[str, list[dict]], chance: float):
    """Mean accuracy (%) on the world-fact tasks along training, one line per model, against chance."""
    fig = lines([{"x": [k["step"] for k in records], "label": label,
                  "y": [sum(k["accuracy"].values()) / len(k["accuracy"]) for k in records]}
                 for label, records in series.items()], "pretraining step", "mean accuracy on world-fact tasks (%)",
                f"World knowledge along training (chance = {chance:.0f}%)", logx=True)
    fig.axes[0].axhline(chance, color="black", ls=":", lw=1)
    return fig


def entropy_by_fraction(rows_by_label: dict[str, list[dict]], column: str = "entropy_dolma"):
    """Fig. 2: knowledge entropy against step / final step; two models on twin axes (their maxima differ)."""
    labels = list(rows_by_label)
    x_label = "training step / final step (%)"
    if len(labels) != 2:
        return lines([{"x": [100 * r["fraction"] for r in rows], "y": [r[column] for r in rows], "label": label}
                      for label, rows in rows_by_label.items()], x_label, "knowledge entropy (nats)")
    fig, left, right = twin_axes(x_label, f"entropy ({labels[0]})", f"entropy ({labels[1]})",
                                 "Knowledge entropy along pretraining")
    for ax, label, color in ((left, labels[0], "tab:blue"), (right, labels[1], "tab:red")):
        rows = rows_by_label[label]
        ax.plot([100 * r["fraction"] for r in rows], [r[column] for r in rows], "o-", color=color, label=label,
                markersize=4)
        ax.tick_params(axis="y", colors=color)
    fig.legend(loc="center right", bbox_to_anchor=(0.88, 0.5))
    fig.tight_layout()
    return fig


def entropy_by_step(rows: list[dict], columns: dict[str, str], title: str, y_label: str = "knowledge entropy (nats)"):
    """Several entropy columns of one model along its checkpoints (log-scaled steps)."""
    return lines([{"x": [r["step"] for r in rows], "y": [r[c] for r in rows], "label": label}
                  for c, label in columns.items()], "pretraining step", y_label, title, logx=True)


def layer_entropy(rows: list[dict], stages: dict[str, int], title: str):
    """Fig. 8: per-layer entropy at the initial, mid and final stages, with ln m dotted."""
    by_step = {r["step"]: r for r in rows}
    fig = lines([{"x": list(range(by_step[s]["num_layers"])), "y": by_step[s]["layer_entropy"],
                  "label": f"{stage} (step {s})"} for stage, s in stages.items()], "layer", "layer entropy (nats)",
                title)
    fig.axes[0].axhline(maximum(rows[-1], layers=1), color="black", ls=":", lw=1)
    return fig


# Continual learning (Section 4): x is the starting checkpoint's fraction of the schedule.
START_X = "starting checkpoint: step / final step (%)"
K_LABEL = "K (nats per target token) ↑"


def _pct(rows):
    return [100 * r["fraction"] for r in rows]


def _series(rows, pairs, label, style="o-"):
    """[(quantity, axis, column)] of one curve as twin_panels series."""
    return [{"x": _pct(rows), "y": [r[column] for r in rows], "label": f"{label} ({q})", "axis": axis,
             "color": QUANTITY_COLORS[q], "style": style} for q, axis, column in pairs]


AF = (("A", "left", "A"), ("F", "right", "F"))
KP = (("K", "left", "K_CL"), ("P", "right", "P_CL"))


def acquisition_panels(curves: dict[str, tuple[list[dict], str]], title: str, paper_rows: list[dict] | None = None):
    """Figs. 4 and 13: (a) A and F, (b) end K and P against the start, one style per curve; with `paper_rows`
    a second row of panels draws the paper's OLMo-1B numbers on the same x-axis."""
    panels = [{"title": "(a) acquisition and forgetting", "left": "A (%) ↑", "right": "F (%) ↓",
               "series": [s for label, (rows, style) in curves.items() for s in _series(rows, AF, label, style)]},
              {"title": "(b) end performance", "left": K_LABEL, "right": "P (%) ↑",
               "series": [s for label, (rows, style) in curves.items() for s in _series(rows, KP, label, style)]}]
    if paper_rows:
        panels += [{"title": "(a) paper, OLMo-1B (Table 1a)", "left": "A (%) ↑", "right": "F (%) ↓",
                    "series": _series(paper_rows, AF, "OLMo-1B")},
                   {"title": "(b) paper, OLMo-1B (Table 2a)", "left": "K (paper's normalisation)", "right": "P (%) ↑",
                    "series": _series(paper_rows, KP, "OLMo-1B")}]
    return twin_panels(panels, START_X, title)


def injection_sets(rows: list[dict], title: str):
    """Fig. 11: A and end K of the paraphrase set (injected every time) and the once set."""
    series = []
    for s, name, style in (("para", "Paraphrase", "o-"), ("once", "Once", "s:")):
        series += _series(rows, (("A", "left", f"A_{s}"),), name, style)
        series += [{**x, "label": f"{name} (K)"} for x in _series(rows, (("K", "right", f"K_{s}_CL"),), name, style)]
    return twin_panels([{"title": title, "left": "A (%) ↑", "right": K_LABEL, "series": series}], START_X)


def before_after(panels: list[tuple[str, list[dict], list, list]], title: str):
    """Fig. 12: end K and P after continual learning (solid) and of the starting checkpoint (dotted).
    panels: (title, rows, K before, P before)."""
    out = []
    for name, rows, k_pt, p_pt in panels:
        series = []
        for q, axis, before in (("K", "left", k_pt), ("P", "right", p_pt)):
            series.append({"x": _pct(rows), "y": [r[f"{q}_CL"] for r in rows], "label": f"CL ({q})", "axis": axis,
                           "color": QUANTITY_COLORS[q]})
            series.append({"x": _pct(rows), "y": before, "label": f"PT ({q})", "axis": axis,
                           "color": QUANTITY_COLORS[q], "style": "s:"})
        out.append({"title": name, "left": K_LABEL if len(out) == 0 else "K (paper's normalisation)",
                    "right": "P (%) ↑", "series": series})
    return twin_panels(out, START_X, title)


def entropy_and_acquisition(panels: list[tuple[str, list[dict], list[dict]]]):
    """Fig. 14: knowledge entropy along training and A of the runs started there. panels: (label, entropy rows,
    joined rows)."""
    return twin_panels([{"title": label, "left": "knowledge entropy (nats)", "right": "A (%) ↑",
                         "x_label": "pretraining step",
                         "series": [{"x": [r["step"] for r in entropy], "y": [r["entropy_dolma"] for r in entropy],
                                     "label": "knowledge entropy", "color": QUANTITY_COLORS["entropy"]},
                                    {"x": [r["step"] for r in joined], "y": [r["A"] for r in joined], "label": "A",
                                     "axis": "right", "color": QUANTITY_COLORS["A"], "style": "s--"}]}
                        for label, entropy, joined in panels], "pretraining step", "Figure 14")


def entropy_scatter(joined: list[dict], title: str):
    """Footnote 11: A and F of each run against the knowledge entropy of its start."""
    return twin_panels([{"title": title, "left": "A (%) ↑", "right": "F (%) ↓",
                         "series": [{"x": [r["entropy"] for r in joined], "y": [r[q] for r in joined], "label": q,
                                     "axis": axis, "color": QUANTITY_COLORS[q], "style": "o"}
                                    for q, axis in (("A", "left"), ("F", "right"))]}],
                       "knowledge entropy of the starting checkpoint (nats)", "Entropy against A and F")


# Resuscitation (Section 5): outcomes on both bases.
def _outcome_series(x, runs: list[dict], label: str, **style):
    """Filled: A, F on the own basis and end K, P; hollow: A, F against the unmodified checkpoint."""
    return [{"x": x, "label": f"{label}, own step 0", "values": {m: [r[m] for r in runs] for m in "AFKP"}, **style},
            {"x": x, "label": f"{label}, vs unmodified θ_PT", "face": "none",
             "style": style.get("style", "o-").replace("o", "s"), **{k: v for k, v in style.items() if k != "style"},
             "values": {m: [r[f"{m}_unmodified"] for r in runs] for m in "AF"}}]


def factor_grid(runs: dict[str, dict], x_label: str, title: str, original: dict):
    """Figs. 5 and 15: outcomes per recipe (categories or p values), the original run dashed."""
    x = list(runs)
    return intervention_grid(_outcome_series(x, list(runs.values()), "resuscitated"), x_label, title,
                             references=[{"label": "original", "values": original, "ls": "--"}])


def stages_grid(starts: list[int], runs: dict[int, dict], originals: dict[int, dict], title: str):
    """Fig. 16: resuscitated (red) against original (black, dotted) runs per starting checkpoint."""
    series = _outcome_series(starts, [runs[s] for s in starts], "resuscitated", color="tab:red")
    series.append({"x": starts, "label": "original", "style": "o:", "color": "black",
                   "values": {m: [originals[s][m] for s in starts] for m in "AFKP"}})
    return intervention_grid(series, "pretraining step of the starting checkpoint", title)


def mids_grid(runs: dict[int, dict[float, dict]], originals: dict[int, dict], title: str):
    """Fig. 17: the q sweep at two intermediate checkpoints (solid, dotted)."""
    series = []
    for i, (step, by_q) in enumerate(runs.items()):
        x = ["original"] + [f"q={f:g}" for f in by_q]
        series += _outcome_series(x, [originals[step], *by_q.values()], f"step {step}",
                                  style="o-" if i == 0 else "o:", color=f"C{i}")
    return intervention_grid(series, "amplifying factor q", title)


def temperature_grid(runs: dict[float, dict], ffn_run: dict, original: dict, title: str, ratio: float, factor: float):
    """Fig. 18: attention temperatures against FFN resuscitation (dotted) and the original run (dashed)."""
    temps = list(runs)
    return intervention_grid(
        _outcome_series(temps, [runs[t] for t in temps], "attention temperature"), "starting attention temperature T",
        title, references=[{"label": f"FFN resuscitation (p={ratio:g}, q={factor:g}), own step 0", "values": ffn_run,
                            "ls": ":", "color": "tab:red"},
                           {"label": "FFN resuscitation, vs unmodified θ_PT", "ls": ":", "color": "tab:pink",
                            "values": {m: ffn_run[f"{m}_unmodified"] for m in "AF"}},
                           {"label": "original", "values": original, "ls": "--"}])


def star_figure(steps: list[int], entropy: list[float], starts: list[int], originals: dict[int, dict], final: int,
                star_entropy: float, intended: float, star: dict, title: str):
    """Fig. 1's star from data: entropy along training with the resuscitated final checkpoint (measured, and as
    Algorithm 1 intends), and A, F of the original runs with the resuscitated run on both bases."""
    panels = [{"y": entropy, "label": "knowledge entropy (nats)", "x_label": "pretraining step",
               "stars": [{"x": final, "y": star_entropy, "label": "resuscitated, measured"},
                         {"x": final, "y": intended, "label": "as Algorithm 1 intends", "face": "none"}]}]
    for metric, axis in (("A", "acquisition A (%) ↑"), ("F", "forgetting F (%) ↓")):
        panels.append({"x": starts, "y": [originals[s][metric] for s in starts], "label": axis,
                       "stars": [{"x": final, "y": star[metric], "label": "resuscitated, own step 0"},
                                 {"x": final, "y": star[f"{metric}_unmodified"], "label": "resuscitated, unmodified θ_PT",
                                  "face": "none"}]})
    return star_panels(steps, panels, "pretraining step of the starting checkpoint", title)


# The regime study: entropy against tokens per parameter, one colour per cell, one line per seed.
def regime_curves(summaries: list[dict], title: str, x: str = "tokens_per_parameter"):
    """(left) knowledge entropy's deficit from its maximum, in % of L ln m, with the first seed's bootstrap band;
    (right) the same relative to the run's own value at 20% of training, so drops of different widths compare."""
    fig, (left, right) = plt.subplots(2, 1, figsize=(COLUMN, 6.6))  # stacked: each panel the column's width
    for i, s in enumerate(summaries):
        color = f"C{i}"
        for j, (seed, rows) in enumerate(sorted(s["rows"].items())):
            xs = [max(r[x], 1e-3) for r in rows]
            label = f"{s['cell']}" if j == 0 else None
            left.plot(xs, [r["deficit"] for r in rows], "-o", color=color, markersize=3, lw=1.5 if j == 0 else 0.8,
                      alpha=1 if j == 0 else 0.6, label=label)
            if j == 0:
                left.fill_between(xs, [100 * (r["maximum"] - r["high"]) / r["maximum"] for r in rows],
                                  [100 * (r["maximum"] - r["low"]) / r["maximum"] for r in rows], color=color, alpha=0.2)
            start = from_initial_stage(rows)[0]
            right.plot(xs, [start["entropy"] - r["entropy"] for r in rows], "-", color=color, lw=1.5 if j == 0 else 0.8,
                       alpha=1 if j == 0 else 0.6)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("tokens per non-embedding parameter" if x == "tokens_per_parameter" else x)
        ax.grid(alpha=0.3)
    left.set_ylabel("entropy deficit (L ln m − H) / L ln m (%)")
    right.set_ylabel("drop since 20% of training (nats) ↑ = decay")
    right.axhline(0, color="black", lw=0.8)
    left.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def regime_layers(summaries: list[dict], title: str):
    """Per layer at the end of the first seed's run: ln m − H_l (left) and the share of the layer's mean |C| held by
    its top 1% of slots (right), one line per cell."""
    fig, (left, right) = plt.subplots(2, 1, figsize=(COLUMN, 6.0))  # stacked: each panel the column's width
    for i, s in enumerate(summaries):
        end = s["rows"][min(s["rows"])][-1]
        layers = list(range(len(end["layer_deficit"])))
        left.plot(layers, end["layer_deficit"], "-o", color=f"C{i}", label=s["cell"], markersize=4)
        right.plot(layers, [100 * v for v in end["layer_top1_share"]], "-o", color=f"C{i}", markersize=4)
    left.set_ylabel("ln m − H_l (nats)")
    right.set_ylabel("top-1% share of mean |C| (%)")
    for ax in (left, right):
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    left.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pilot_map(pilots: dict):
    """The pilots on the three criteria: world accuracy against the change of knowledge entropy from 20% of training
    (each calibration seed, with its interval), marker filled when A on paraphrases is positive at every start."""
    fig, ax = plt.subplots(figsize=(COLUMN, 4.8))
    for i, (key, r) in enumerate(pilots["families"].items()):
        color = f"C{i % 10}"
        acquires = all(v > 0 for v in r["acquisition_para_by_start"].values())
        for i_seed, (seed, change) in enumerate(r["entropy_change_from_20pct"].items()):
            low, high = r["entropy_change_ci"][seed]
            acc = 100 * r["world_accuracy_by_seed"][seed]
            ax.errorbar(change, acc, xerr=[[change - low], [high - change]], fmt="o", color=color,
                        mfc=color if acquires else "white", ms=8, label=None if i_seed else key)
    ax.axvline(0, color="grey", lw=0.8)
    ax.axhline(100 * MIN_ACCURACY, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("change of knowledge entropy from 20% of training to the end (nats; < 0: decay)")
    ax.set_ylabel("world accuracy at the end (%)")
    ax.set_title("Pilots on calibration seeds (filled: A on paraphrases > 0 at every start)")
    ax.legend(fontsize=SMALLEST_PT, loc="best")
    fig.tight_layout()
    return fig


def regime_map(summaries: dict[str, list[dict]]):
    """Where the decay lives: every cell of the regime study at its tokens per parameter and S, coloured by the
    change of knowledge entropy from 20% of training to the end (mean over seeds; blue: a decay), labelled with it
    and its noise floor; squares: output matrix tied to the embeddings, circles: untied and decayed."""
    cells = {(s["cell"], s["sweep"]): s for group in summaries.values() for s in group}
    unique = {}
    for s in cells.values():   # the base cell appears in every sweep: once
        unique.setdefault((round(s["tokens_per_parameter"], 3), round(s["S"], 3), s["tied"], s["cell"] == "base"
                           or s["cell"]), s)
    fig, ax = plt.subplots(figsize=(COLUMN, 5))
    changes = [-s["drop"].mean for s in unique.values()]
    bound = max(1e-3, max(abs(c) for c in changes))
    middle = np.sqrt(min(s["tokens_per_parameter"] for s in unique.values())
                     * max(s["tokens_per_parameter"] for s in unique.values()))
    for s, change in zip(unique.values(), changes):
        x, y = s["tokens_per_parameter"], max(s["S"], 0.05)   # S = 0 drawn at the axis' floor
        ax.scatter(x, y, c=[change], cmap="coolwarm_r", vmin=-bound, vmax=bound, s=160,
                   marker="s" if s["tied"] else "o", edgecolors="black")
        right = x > middle   # labels point inwards, so they stay inside the figure's width
        ax.annotate(f"{s['cell']}\n{change:+.3f} ± {2 * s['noise']:.3f}", (x, y), textcoords="offset points",
                    xytext=(-8 if right else 8, 4), ha="right" if right else "left", fontsize=SMALLEST_PT)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens per non-embedding parameter")
    ax.set_ylabel("weight-decay e-folds S (S = 0 at the floor)")
    ax.set_title("Change of knowledge entropy from 20% of training to the end (nats; blue: decay)")
    mappable = plt.cm.ScalarMappable(cmap="coolwarm_r", norm=plt.Normalize(-bound, bound))
    fig.colorbar(mappable, ax=ax, label="change (nats)")
    fig.tight_layout()
    return fig
