"""Learning curves: a valid PNG of the expected size with three panels holding exactly the
logged values; without matplotlib, None and the install hint."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from qa_core import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def eval_record(step, epoch, val_loss, train_loss, train_acc, val_acc, em, f1):
    return {"event": "eval", "step": step, "epoch": epoch, "val_loss": val_loss, "train_loss": train_loss,
            "train_token_acc": train_acc, "val_token_acc": val_acc, "val_exact": em, "val_f1": f1,
            "train_exact": em + 20, "train_f1": f1 + 20, "timing": {"val": {}}}


RECORDS = [
    {"event": "data", "train_examples": 10},
    eval_record(0, 0, 5.0, 5.1, 0.05, 0.04, 1.0, 3.0),
    {"event": "train", "step": 10, "epoch": 0, "loss": 4.0, "lr": 1e-4, "grad_norm": 3.0, "timing": {}},
    {"event": "train", "step": 20, "epoch": 0, "loss": 2.5, "lr": 1e-4, "grad_norm": 2.0, "timing": {}},
    eval_record(20, 1, 2.0, 1.8, 0.60, 0.45, 40.0, 52.0),
    {"event": "train", "step": 30, "epoch": 1, "loss": 1.0, "lr": 5e-5, "grad_norm": 1.0, "timing": {}},
    {"event": "train", "step": 40, "epoch": 1, "loss": 0.5, "lr": 0.0, "grad_norm": 1.0, "timing": {}},
    eval_record(40, 2, 2.4, 0.6, 0.90, 0.47, 41.0, 53.5),
    {"event": "end", "step": 40, "reason": "completed"},
]


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "my-run"
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    (path / "summary.json").write_text(json.dumps({"best_step": 20}))
    return path


def lines_by_label(ax) -> dict:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_run_figure_has_three_panels_with_the_logged_values():
    figure = plots.build_run_figure(RECORDS, title="r", best_step=20)
    assert len(figure.axes) == 3
    loss, acc, scores = (lines_by_label(ax) for ax in figure.axes)
    assert loss["train loss (batches)"] == ([10, 20, 30, 40], [4.0, 2.5, 1.0, 0.5])
    assert loss["val loss"] == ([0, 20, 40], [5.0, 2.0, 2.4])
    assert loss["train-subset loss (eval mode)"] == ([0, 20, 40], [5.1, 1.8, 0.6])
    assert acc["train token acc"] == ([0, 20, 40], [0.05, 0.60, 0.90])
    assert acc["val token acc"] == ([0, 20, 40], [0.04, 0.45, 0.47])
    assert scores["val EM"][1] == [1.0, 40.0, 41.0] and scores["val F1"][1] == [3.0, 52.0, 53.5]
    assert scores["train F1"][1] == [23.0, 72.0, 73.5]
    assert all(labels["best (step 20)"][0] == [20, 20] for labels in (loss, acc, scores))


def test_plot_run_writes_a_valid_png(run_dir):
    import matplotlib.image

    out = plots.plot_run(run_dir)
    assert out == run_dir / "curves.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(out)
    assert image.shape == (400, 1500, 4)  # 3 panels of 5x4 inches at 100 dpi
    assert np.std(image[..., :3]) > 0.05  # drawn on, not blank


def test_plot_sweep_overlays_every_run(run_dir, tmp_path):
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:5]))
    figure = plots.build_sweep_figure([("a", plots.read_metrics(run_dir)), ("b", plots.read_metrics(other))], "val_f1")
    metric_lines = lines_by_label(figure.axes[0])
    assert metric_lines == {"a": ([0, 20, 40], [3.0, 52.0, 53.5]), "b": ([0, 20], [3.0, 52.0])}
    gap = lines_by_label(figure.axes[2])["a"][1]
    assert gap == pytest.approx([0.01, 0.15, 0.43])
    out = plots.plot_sweep(tmp_path, [run_dir, other, tmp_path / "crashed-before-logging"], "val_f1")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_without_matplotlib_returns_none_and_says_how(run_dir, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert plots.plot_run(run_dir) is None
    assert not (run_dir / "curves.png").exists()
    assert "pip install 'qa-core[plot]'" in capsys.readouterr().out


def test_missing_or_corrupt_metrics(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        plots.plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"event": "data"}\n{"event": "tra')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: invalid JSON"):
        plots.read_metrics(tmp_path)
