"""Learning curves from metrics.jsonl (optional: needs the `plot` extra, i.e. matplotlib).

    plot_run("runs/quickstart")             -> runs/quickstart/curves.png
    plot_sweep(sweep_dir, run_dirs, "val_f1") -> sweep_dir/sweep_curves.png

Without matplotlib both return None after printing how to install it; training never needs it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

INSTALL_HINT = ("matplotlib is not installed: pip install 'qa-core[plot]' "
                "(in a checkout: .venv/bin/pip install -e '.[plot]')")
RUN_PANELS = ("loss", "token accuracy", "EM / F1")


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is {run_dir} a run directory?)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: invalid JSON ({err.msg}); the file was written by the "
                             "training loop: a run killed mid-write leaves a partial last line, delete it") from None
    return records


def _new_figure(panels: int, width_per_panel: float = 5.0, height: float = 4.0):
    """A Figure on the Agg canvas (no pyplot global state, no display needed), or None."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print(INSTALL_HINT)
        return None
    figure = Figure(figsize=(width_per_panel * panels, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    figure.subplots(1, panels)
    return figure


def _series(records: list[dict], event: str, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in records if r.get("event") == event and isinstance(r.get(key), (int, float))]
    return [r["step"] for r in rows], [float(r[key]) for r in rows]


def build_run_figure(records: list[dict], title: str = "", best_step: int | None = None):
    """The three-panel figure of one run (None without matplotlib)."""
    figure = _new_figure(len(RUN_PANELS))
    if figure is None:
        return None
    loss_ax, acc_ax, em_ax = figure.axes
    panels = (
        (loss_ax, "loss", [("train", "loss", "train loss (batches)", "-"),
                           ("eval", "val_loss", "val loss", "o-"),
                           ("eval", "train_loss", "train-subset loss (eval mode)", "s--")]),
        (acc_ax, "token accuracy", [("eval", "train_token_acc", "train token acc", "s--"),
                                    ("eval", "val_token_acc", "val token acc", "o-")]),
        (em_ax, "EM / F1 (%)", [("eval", "val_exact", "val EM", "o-"), ("eval", "val_f1", "val F1", "o-"),
                                ("eval", "train_exact", "train EM", "s--"), ("eval", "train_f1", "train F1", "s--")]),
    )
    for ax, ylabel, lines in panels:
        for event, key, label, style in lines:
            steps, values = _series(records, event, key)
            if steps:
                ax.plot(steps, values, style, label=label, markersize=4,
                        linewidth=1 if event == "train" else 1.5, alpha=0.6 if event == "train" else 1.0)
        if best_step is not None and best_step >= 0:
            ax.axvline(best_step, color="grey", linestyle=":", linewidth=1, label=f"best (step {best_step})")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


def plot_run(run_dir: str | Path) -> Path | None:
    """Write run_dir/curves.png from run_dir/metrics.jsonl; None (and a hint) without matplotlib."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    best_step = None
    summary = run_dir / "summary.json"
    if summary.exists():
        best_step = json.loads(summary.read_text()).get("best_step")
    figure = build_run_figure(records, title=run_dir.name, best_step=best_step)
    if figure is None:
        return None
    out = run_dir / "curves.png"
    figure.savefig(out)
    return out


def build_sweep_figure(runs: Sequence[tuple[str, list[dict]]], metric: str):
    """Overlay of every run: the sweep metric, val loss, and the train-val token accuracy gap."""
    figure = _new_figure(3)
    if figure is None:
        return None
    metric_ax, loss_ax, gap_ax = figure.axes
    for label, records in runs:
        evals = [r for r in records if r.get("event") == "eval"]
        steps, values = _series(records, "eval", metric)
        line, = metric_ax.plot(steps, values, "o-", markersize=3, label=label)
        steps, values = _series(records, "eval", "val_loss")
        loss_ax.plot(steps, values, "o-", markersize=3, color=line.get_color(), label=label)
        gap = [(r["step"], r["train_token_acc"] - r["val_token_acc"]) for r in evals
               if isinstance(r.get("train_token_acc"), (int, float)) and isinstance(r.get("val_token_acc"), (int, float))]
        gap_ax.plot([s for s, _ in gap], [g for _, g in gap], "o-", markersize=3, color=line.get_color(), label=label)
    for ax, ylabel in ((metric_ax, metric), (loss_ax, "val_loss"), (gap_ax, "train - val token accuracy")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if runs:
        metric_ax.legend(fontsize=7)
    return figure


def plot_sweep(sweep_dir: str | Path, run_dirs: Sequence[str | Path], metric: str) -> Path | None:
    """Write sweep_dir/sweep_curves.png overlaying the runs that left a metrics.jsonl."""
    runs = [(Path(d).name, read_metrics(d)) for d in run_dirs if (Path(d) / "metrics.jsonl").exists()]
    figure = build_sweep_figure(runs, metric)
    if figure is None:
        return None
    figure.suptitle(f"sweep {Path(sweep_dir).name}: {metric}")
    out = Path(sweep_dir) / "sweep_curves.png"
    figure.savefig(out)
    return out
