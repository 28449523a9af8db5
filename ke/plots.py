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
