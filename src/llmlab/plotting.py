"""PNG plotting helpers (sprint 02 onwards): curves, image grids, heat-maps, matrices, bars.

Every helper writes a PNG (creating folders), closes its figure and returns the path, so
scripts can log the path and tests can check the file. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    path: Path | str,
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "value",
    xs: Mapping[str, Sequence[float]] | None = None,
    logy: bool = False,
) -> Path:
    """Line plot of one or more named series (loss curves, LR schedules)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in curves.items():
        x = xs[name] if xs and name in xs else range(1, len(ys) + 1)
        ax.plot(list(x), list(ys), label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: Path | str,
    row_titles: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """A grid of grey-scale images, one list per row (e.g. originals vs augmented)."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.4 * n_cols, 1.5 * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(np.asarray(row[j]).squeeze(), cmap="gray")
        if row_titles:
            axes[i][0].set_title(row_titles[i], fontsize=8, loc="left")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_heatmap(
    matrix: np.ndarray,
    path: Path | str,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    xticklabels: Sequence[str] | None = None,
    yticklabels: Sequence[str] | None = None,
    cmap: str = "viridis",
    annotate: bool = False,
) -> Path:
    """A heat-map (positional encodings, attention weights, masks)."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(7, 5))
    im = ax.imshow(matrix, aspect="auto", cmap=cmap)
    fig.colorbar(im, ax=ax)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), labels=list(xticklabels), rotation=90, fontsize=7)
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)), labels=list(yticklabels), fontsize=7)
    if annotate:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=6, color="w")
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray, path: Path | str, labels: Sequence[str], title: str = "Confusion matrix"
) -> Path:
    """A confusion matrix with counts in the cells (rows: true class, columns: predicted)."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set(title=title, xlabel="predicted", ylabel="true")
    ax.set_xticks(range(len(labels)), labels=list(labels))
    ax.set_yticks(range(len(labels)), labels=list(labels))
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v > threshold else "black",
        )
    return _save(fig, path)


def plot_scatter(
    points: np.ndarray,
    path: Path | str,
    labels: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """A 2-D scatter plot, coloured by group, each point optionally annotated."""
    points = np.asarray(points)
    fig, ax = plt.subplots(figsize=(7, 6))
    if groups is None:
        ax.scatter(points[:, 0], points[:, 1], s=18)
    else:
        for g in dict.fromkeys(groups):
            idx = [i for i, x in enumerate(groups) if x == g]
            ax.scatter(points[idx, 0], points[idx, 1], s=18, label=g)
        ax.legend(fontsize=7)
    if labels is not None:
        for (x, y), text in zip(points, labels, strict=False):
            ax.annotate(text, (x, y), fontsize=6, alpha=0.8)
    ax.set_title(title)
    return _save(fig, path)


def plot_bar_panels(
    panels: Mapping[str, tuple[Sequence[str], Sequence[float]]],
    path: Path | str,
    title: str = "",
    ylabel: str = "probability",
    columns: int = 3,
) -> Path:
    """Small bar charts side by side, one per named panel of (labels, values): e.g. a
    next-token distribution before and after each decoding filter."""
    n = len(panels)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, (labels, values)) in zip(axes.flat, panels.items(), strict=False):
        ax.bar(range(len(values)), list(values), color="tab:blue")
        ax.set_xticks(range(len(labels)), labels=list(labels), rotation=90, fontsize=6)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
