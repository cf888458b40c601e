"""Sweeps: a 2x2 grid on a tiny model runs 4 processes, survives failing runs, and reports
each run's best evaluation exactly as its metrics.jsonl holds it."""
from __future__ import annotations

import csv
import json

import pytest

from qa_core import sweep
from qa_core.config import ConfigError

from conftest import REPO_ROOT


def write_config(tmp_path, model_dir) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(f"""
[model]
name_or_path = "{model_dir}"
[data]
train_file = "{REPO_ROOT / 'data/quickstart/train.json'}"
val_file = "{REPO_ROOT / 'data/quickstart/val.json'}"
max_train_examples = 12
max_val_examples = 8
max_seq_length = 192
doc_stride = 64
cache_dir = ""
[train]
epochs = 1
batch_size = 8
progress = false
device = "cpu"
[eval]
train_subset_examples = 4
[checkpoint]
save_best = false
[run]
output_dir = "{tmp_path / 'runs'}"
""")
    return str(path)


def best_by_f1(run_dir):
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["event"] == "eval"]
    return max(evals, key=lambda r: (r["val_f1"], -r["step"]))


def test_grid_of_four_runs_survives_failures(tmp_path, tiny_bert_dir, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child processes: tiny model, no thread contention
    cfg = write_config(tmp_path, tiny_bert_dir)
    missing = tmp_path / "no-such-model"
    code = sweep.main(["--cfg", cfg, "--sweep", f"model.name_or_path={missing},{tiny_bert_dir}",
                       "--sweep", "optim.lr=1e-4,3e-4", "--set", "train.seed=3", "--sweep-name", "grid"])
    assert code == 1  # some runs failed, the sweep itself finished
    sweep_dir = tmp_path / "runs" / "grid"
    with open(sweep_dir / "sweep.csv") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["combination", "model.name_or_path", "optim.lr", "status", "exit_code",
                                 "best_step", "best_epoch", "val_exact", "val_f1", "val_loss", "train_token_acc",
                                 "val_token_acc", "train_val_gap", "wall_s", "run_dir"]
    assert len(rows) == 4
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    # The failing model comes first in the grid, so the good runs ran after two crashes.
    assert sorted(r["combination"][:2] for r in failed) == ["00", "01"]
    assert sorted(r["combination"][:2] for r in ok) == ["02", "03"]
    assert rows[:2] == sorted(ok, key=lambda r: -float(r["val_f1"]))  # ok runs first, best F1 first
    for row in failed:
        assert row["status"] == f"failed (exit {row['exit_code']})" and row["exit_code"] != "0"
        assert row["val_f1"] == ""
        assert "no-such-model" in (sweep_dir / f"{row['combination']}.log").read_text()
    for row in ok:
        run_dir = sweep_dir / row["combination"]
        assert row["model.name_or_path"] == str(tiny_bert_dir)
        assert f"lr = {float(row['optim.lr'])}" in (run_dir / "config.toml").read_text()
        assert "seed = 3" in (run_dir / "config.toml").read_text()
        best = best_by_f1(run_dir)
        assert int(row["best_step"]) == best["step"] and int(row["best_epoch"]) == best["epoch"]
        for key in ("val_exact", "val_f1", "val_loss", "train_token_acc", "val_token_acc"):
            assert float(row[key]) == best[key]
        assert float(row["train_val_gap"]) == best["train_token_acc"] - best["val_token_acc"]
        assert float(row["wall_s"]) > 0
    printed = capsys.readouterr().out
    assert "sorted by val_f1 (max)" in printed and printed.count("failed (exit") >= 2
    assert (sweep_dir / "sweep_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_combination_is_validated_before_any_run(tmp_path, tiny_bert_dir):
    cfg = write_config(tmp_path, tiny_bert_dir)
    with pytest.raises(ConfigError, match=r"combination 01_lr=2\.0_hidden=0\.1: optim\.lr = 2\.0 is out of range"):
        sweep.run_sweep(cfg, ["optim.lr=1e-4,2.0", "model.dropout.hidden=0.1"], name="bad", quiet=True)
    assert not (tmp_path / "runs" / "bad").exists()
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'"):
        sweep.run_sweep(cfg, ["optim.lrr=1e-4"], name="bad", quiet=True)
    with pytest.raises(ConfigError, match="also swept"):
        sweep.run_sweep(cfg, ["optim.lr=1e-4,2e-4"], ["optim.lr=1e-3"], name="bad", quiet=True)
    with pytest.raises(ConfigError, match="not a reported metric"):
        sweep.run_sweep(cfg, ["optim.lr=1e-4"], metric="val_f2", name="bad", quiet=True)
    assert sweep.main(["--cfg", cfg, "--sweep", "optim.lr"]) == 2


def test_grid_expansion_and_names():
    grid = sweep.expand_grid(["optim.lr=2e-5,3e-5", "model.dropout.hidden=0.1,0.3"])
    assert grid == [{"optim.lr": "2e-5", "model.dropout.hidden": "0.1"},
                    {"optim.lr": "2e-5", "model.dropout.hidden": "0.3"},
                    {"optim.lr": "3e-5", "model.dropout.hidden": "0.1"},
                    {"optim.lr": "3e-5", "model.dropout.hidden": "0.3"}]
    assert sweep.combination_name(3, grid[3]) == "03_lr=3e-5_hidden=0.3"
    assert sweep.combination_name(0, {"model.dropout.hidden": "0.1", "augment.hidden": "0.2"}) == \
        "00_model.dropout.hidden=0.1_augment.hidden=0.2"
    assert sweep.combination_name(1, {"model.name_or_path": "/models/tiny bert/"}) == "01_name_or_path=tiny-bert"
    with pytest.raises(ConfigError, match="swept twice"):
        sweep.expand_grid(["optim.lr=1e-5", "optim.lr=2e-5"])


def test_summary_over_seeds_hand_checked(tmp_path):
    def result(lr, seed, f1, exact=10.0, loss=2.0, train=0.5, val=0.25, exit_code=0):
        best = {"step": 4, "epoch": 1, "val_f1": f1, "val_exact": exact, "val_loss": loss,
                "train_token_acc": train, "val_token_acc": val}
        return sweep.SweepResult(f"lr={lr}_seed={seed}", {"optim.lr": lr, "train.seed": seed}, tmp_path, exit_code,
                                 1.0, best if exit_code == 0 else None)

    results = [result("1e-4", "1", 30.0, exact=20.0), result("1e-4", "2", 34.0, exact=24.0, val=0.45),
               result("3e-4", "1", 40.0, loss=1.0), result("3e-4", "2", 0.0, exit_code=1),  # one seed failed
               result("5e-4", "1", 0.0, exit_code=1)]  # no finished seed at all
    rows = sweep.summarise_over_seeds(results, "val_f1", "max")
    assert [(r["optim.lr"], r["seeds"], r["of_seeds"]) for r in rows] == [("3e-4", 1, 2), ("1e-4", 2, 2),
                                                                         ("5e-4", 0, 1)]
    both = rows[1]
    assert both["val_f1_mean"] == 32.0 and both["val_f1_sd"] == pytest.approx(2 ** 0.5 * 2)  # 30, 34
    assert both["val_exact_mean"] == 22.0 and both["val_loss_sd"] == 0.0
    assert both["train_val_gap_mean"] == pytest.approx(0.15)  # gaps 0.25 and 0.05
    assert rows[0]["val_f1_mean"] == 40.0 and rows[0]["val_f1_sd"] is None
    assert rows[2]["val_f1_mean"] is None and "train.seed" not in rows[0]
    table = sweep.format_seed_table(rows, "val_f1", "max")
    assert "32.00 +- 2.83" in table and "2/2" in table and "1/2" in table
    # Sorting by a loss (min) puts the lowest mean first; the metric gets its own columns once.
    rows = sweep.summarise_over_seeds(results, "val_loss", "min")
    assert rows[0]["optim.lr"] == "3e-4" and list(rows[0]).count("val_loss_mean") == 1


def test_seed_sweep_writes_the_summary(tmp_path, tiny_bert_dir, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = write_config(tmp_path, tiny_bert_dir)
    assert sweep.main(["--cfg", cfg, "--sweep", "train.seed=1,2", "--set", "optim.lr=3e-4",
                       "--sweep-name", "seeds"]) == 0
    sweep_dir = tmp_path / "runs" / "seeds"
    with open(sweep_dir / "sweep.csv") as fh:
        runs = list(csv.DictReader(fh))
    with open(sweep_dir / "sweep_seeds.csv") as fh:
        (summary,) = list(csv.DictReader(fh))
    f1 = [float(r["val_f1"]) for r in runs]
    assert summary["seeds"] == "2" and float(summary["val_f1_mean"]) == pytest.approx(sum(f1) / 2)
    assert float(summary["val_f1_sd"]) == pytest.approx(abs(f1[0] - f1[1]) / 2 ** 0.5)
    assert "over seeds (train.seed), sorted by mean val_f1 (max)" in capsys.readouterr().out
