"""The training loss log: one row per step with every loss term, written as ``losses.csv`` and ``losses.png``."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from mmdrfuse.files import write_bytes_atomic, write_text_atomic

LOSS_COLUMNS = (
    "step", "epoch", "total", "content", "intensity", "gradient", "perception",
    "refresh_ssim", "refresh_gmsd", "distill", "replaced_ssim", "replaced_gmsd",
)  # fmt: skip
PLOTTED = LOSS_COLUMNS[2:10]  # the loss terms; the replaced fractions are not losses


class LossLog:
    """Rows ``[step, epoch, *terms]`` in the order of :data:`LOSS_COLUMNS` (epoch counted from 1)."""

    def __init__(self, rows: Sequence[Sequence[float]] = ()) -> None:
        self.rows: List[List[float]] = [list(row) for row in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, step: int, epoch: int, terms: Dict[str, float]) -> None:
        self.rows.append([step, epoch] + [terms[name] for name in LOSS_COLUMNS[2:]])

    def write(self, out_dir: Path) -> None:
        """``out_dir/losses.csv`` (8 significant digits) and, when there are rows, ``losses.png``."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(LOSS_COLUMNS)
        for row in self.rows:
            writer.writerow([int(row[0]), int(row[1])] + [f"{v:.8g}" for v in row[2:]])
        write_text_atomic(Path(out_dir) / "losses.csv", text.getvalue())
        if self.rows:
            write_bytes_atomic(Path(out_dir) / "losses.png", plot_losses(np.asarray(self.rows, dtype=np.float64)))


def plot_losses(data: np.ndarray) -> bytes:
    """PNG bytes of the nonzero loss terms of ``data`` (rows as in :class:`LossLog`) against the step, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5), tight_layout=True)
    axes = figure.add_subplot()
    for column, name in enumerate(PLOTTED, start=2):
        if np.any(data[:, column] > 0):
            axes.plot(data[:, 0], data[:, column], label=name, linewidth=1)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
