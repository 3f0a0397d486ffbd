"""Figures without pyplot: every ferwild figure is drawn here the same way.

pyplot keeps a global backend and a registry of open figures: a library that calls
``matplotlib.use("Agg")`` changes its caller's backend (a notebook's inline plots), and a
figure it forgets to close leaks. :func:`new_figure` gives a Figure on its own Agg canvas
instead, and :func:`save_figure` writes it; nothing global is touched, it works headless, and
a figure is freed when its last reference goes. matplotlib is imported on first use, so
importing a module that draws costs nothing until it draws.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["new_figure", "subplots", "save_figure"]


def new_figure(figsize: tuple[float, float], dpi: int = 110, layout: str | None = None) -> Any:
    """A ``matplotlib.figure.Figure`` on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], dpi: int = 110,
             layout: str | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """``(fig, axes)`` like ``plt.subplots``, without pyplot (``kwargs`` go to ``Figure.subplots``)."""
    fig = new_figure(figsize, dpi=dpi, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi or fig.dpi)
    return path
