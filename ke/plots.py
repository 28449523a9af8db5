"""Figures of the book: one function per figure kind; each returns the matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

STAGE_COLORS = {"initial": "tab:green", "mid": "tab:orange", "final": "tab:purple"}


def twin_axes(x_label: str, left_label: str, right_label: str, title: str = "", size=(6.4, 3.6)):
    fig, left = plt.subplots(figsize=size)
    right = left.twinx()
    left.set_xlabel(x_label)
    left.set_ylabel(left_label)
    right.set_ylabel(right_label)
    if title:
        left.set_title(title)
    return fig, left, right


def lines(series: list[dict], x_label: str, y_label: str, title: str = "", size=(6.4, 3.6), logx=False):
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
    fig, axes = plt.subplots(1, len(coefficients_by_stage), figsize=(10, 3), sharey=True)
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
                      size=(9.6, 6.4)):
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
    fig.legend([handles[n] for n in names], names, loc="lower center", ncol=min(len(names), 3), fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(names) - 1) // 3), 1, 1))
    return fig


def star_panels(x, panels: list[dict], x_label: str, title: str = "", size=(11, 3.4)):
    """Fig. 1's right side from data: one panel per quantity against the pretraining step, with markers for
    modified models. panels: [{y, label, x?, x_label?, stars: [{x, y, label, marker?, face?}]}] (x: the panel's own steps)."""
    fig, axes = plt.subplots(1, len(panels), figsize=size)
    for ax, panel in zip(np.atleast_1d(axes), panels):
        ax.plot(panel.get("x", x), panel["y"], "o-", color="tab:blue",
                markersize=4, label="original checkpoints")
        for star in panel.get("stars", []):
            ax.plot([star["x"]], [star["y"]], star.get("marker", "*"), markersize=14, color="tab:red",
                    markerfacecolor=star.get("face", "tab:red"), label=star["label"])
        ax.set_xlabel(panel.get("x_label", x_label))
        ax.set_ylabel(panel["label"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


QUANTITY_COLORS = {"A": "tab:blue", "F": "tab:red", "K": "tab:green", "P": "tab:purple", "entropy": "tab:brown"}


def twin_panels(panels: list[dict], x_label: str, title: str = "", ncols: int = 2, panel_size=(5.4, 3.6)):
    """Panels side by side, each with two y axes (the paper's Figs. 4, 11-14). A panel is
    {"title", "left", "right" (axis labels), "x_label"?, "series": [{"x", "y", "label", "axis": "left" | "right",
    "color"?, "style"?}]}; None values in y are gaps. Each panel's legend lists the series of both axes."""
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        right = ax.twinx()
        for s in panel["series"]:
            y = [np.nan if v is None else v for v in s["y"]]
            (right if s.get("axis") == "right" else ax).plot(s["x"], y, s.get("style", "o-"), color=s.get("color"),
                                                             label=s["label"], markersize=4)
        ax.set_xlabel(panel.get("x_label", x_label))
        ax.set_ylabel(panel["left"])
        right.set_ylabel(panel["right"])
        ax.set_title(panel.get("title", ""), fontsize=10)
        handles, names = ax.get_legend_handles_labels()
        more, more_names = right.get_legend_handles_labels()
        ax.legend(handles + more, names + more_names, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  ncol=2, frameon=False)  # below the panel: never over the lines
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.96) if title else None)  # room for the suptitle
    return fig


def histograms(values: dict[str, list[float]], x_label: str, title: str = "", bins: int = 30):
    """Overlaid histograms on shared bins, one per label, each legend entry with n and the median."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
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
