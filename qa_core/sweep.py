"""Grid sweeps: one training process per combination, then a train-vs-val table.

    python train.py --cfg configs/quickstart.toml \\
        --sweep optim.lr=2e-5,3e-5,5e-5 --sweep model.dropout.hidden=0.1,0.3 [--set ...] \\
        [--sweep-metric val_f1 --sweep-mode max --sweep-name NAME]

Every combination's config is validated before the first run starts. Runs go to
<run.output_dir>/<sweep name>/<combination>/, each in its own `python train.py` process so a
crash ends only that run; its output goes to <combination>.log beside it. The sweep writes
sweep.csv and sweep_curves.png (with matplotlib) and prints the table sorted by the metric.

On a small validation set one run's F1 moves by points with the seed alone, so sweep the seed
too (`--sweep train.seed=1,2,3`): the sweep then also prints, and writes to sweep_seeds.csv,
one row per combination of the other keys with the mean and standard deviation over its seeds.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from qa_core.config import REPORTED_METRICS, ConfigError, load_config

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"
# Read from the evaluation that is best by the sweep metric.
EVAL_COLUMNS = ("val_exact", "val_f1", "val_loss", "train_token_acc", "val_token_acc")
CSV_COLUMNS = ("combination", "status", "exit_code", "best_step", "best_epoch", *EVAL_COLUMNS,
               "train_val_gap", "wall_s", "run_dir")
SEED_KEY = "train.seed"
# Averaged over seeds when SEED_KEY is swept (the sweep metric too, if it is another one).
SEED_SUMMARY_COLUMNS = ("val_exact", "val_f1", "val_loss", "train_val_gap")


@dataclass
class SweepResult:
    combination: str
    settings: dict[str, str]
    run_dir: Path
    exit_code: int
    wall_s: float
    best: dict | None  # the eval record that is best by the sweep metric

    @property
    def status(self) -> str:
        return "ok" if self.exit_code == 0 else f"failed (exit {self.exit_code})"

    def row(self, metric: str) -> dict:
        best = self.best or {}
        row = {"combination": self.combination, **self.settings, "status": self.status,
               "exit_code": self.exit_code, "best_step": best.get("step", ""), "best_epoch": best.get("epoch", ""),
               "wall_s": round(self.wall_s, 1), "run_dir": str(self.run_dir)}
        for key in EVAL_COLUMNS + (metric,):
            row[key] = best.get(key, "")
        train, val = best.get("train_token_acc"), best.get("val_token_acc")
        row["train_val_gap"] = train - val if isinstance(train, (int, float)) and isinstance(val, (int, float)) else ""
        return row


# ---------------------------------------------------------------------------------------------
# Grid


def parse_sweep(spec: str) -> tuple[str, list[str]]:
    """'optim.lr=2e-5,3e-5' -> ('optim.lr', ['2e-5', '3e-5'])."""
    if "=" not in spec:
        raise ConfigError(f"--sweep {spec!r}: expected section.key=value1,value2,... e.g. --sweep optim.lr=2e-5,5e-5")
    key, raw = spec.split("=", 1)
    values = [v.strip() for v in raw.split(",")]
    if not key.strip() or "." not in key or not all(values):
        raise ConfigError(f"--sweep {spec!r}: expected section.key=value1,value2,... (no empty values)")
    if len(set(values)) != len(values):
        raise ConfigError(f"--sweep {spec!r}: a value is repeated")
    return key.strip(), values


def expand_grid(sweeps: Sequence[str]) -> list[dict[str, str]]:
    """Every combination, the last --sweep varying fastest."""
    parsed = [parse_sweep(s) for s in sweeps]
    keys = [k for k, _ in parsed]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--sweep: a key is swept twice ({', '.join(keys)}); give all its values in one --sweep")
    return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in parsed))]


def combination_name(index: int, settings: dict[str, str]) -> str:
    """'03_lr=3e-5_hidden=0.1': the key's last part unless two keys share it; a path value
    by its last component (the index keeps names unique)."""
    leaves = [k.rsplit(".", 1)[-1] for k in settings]
    parts = []
    for key, leaf in zip(settings, leaves):
        label = leaf if leaves.count(leaf) == 1 else key
        value = settings[key]
        parts.append(f"{label}={Path(value).name if '/' in value else value}")
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", f"{index:02d}_" + "_".join(parts))


def is_sweep_metric(name: str) -> bool:
    return name in REPORTED_METRICS or name.startswith(("val_HasAns_", "val_NoAns_"))


# ---------------------------------------------------------------------------------------------
# Running


def run_sweep(cfg_path: str | Path, sweeps: Sequence[str], overrides: Sequence[str] = (), *,
              metric: str = "val_f1", mode: str = "max", name: str | None = None,
              train_script: str | Path = TRAIN_SCRIPT, python: str = sys.executable,
              quiet: bool = False) -> list[SweepResult]:
    """Run the grid sequentially; returns the results sorted by `metric` (failed runs last)."""
    if not sweeps:
        raise ConfigError("a sweep needs at least one --sweep section.key=v1,v2")
    if mode not in ("min", "max"):
        raise ConfigError(f"--sweep-mode {mode!r}: use min or max")
    if not is_sweep_metric(metric):
        raise ConfigError(f"--sweep-metric {metric!r} is not a reported metric; use one of {', '.join(REPORTED_METRICS)}")
    for item in overrides:
        if item.split("=", 1)[0].strip() in ("run.name", "run.output_dir"):
            raise ConfigError(f"--set {item}: the sweep sets run.name and run.output_dir itself; "
                              "name the sweep with --sweep-name")
    grid = expand_grid(sweeps)
    swept = set(grid[0])
    clash = [o for o in overrides if o.split("=", 1)[0].strip() in swept]
    if clash:
        raise ConfigError(f"--set {clash[0]}: that key is also swept; drop one of them")

    base = load_config(cfg_path, list(overrides))
    name = name or f"sweep-{Path(cfg_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir = Path(base.run.output_dir) / name
    plan = []
    for index, settings in enumerate(grid):
        combo = combination_name(index, settings)
        combo_overrides = [*overrides, *(f"{k}={v}" for k, v in settings.items()),
                           f"run.name={combo}", f"run.output_dir={sweep_dir}"]
        try:
            load_config(cfg_path, combo_overrides)  # every combination is checked before any run starts
        except ConfigError as err:
            raise ConfigError(f"sweep combination {combo}: {err}") from None
        run_dir = sweep_dir / combo
        if run_dir.exists() and any(run_dir.iterdir()) and not base.run.overwrite:
            raise ConfigError(f"{run_dir} exists: choose another --sweep-name, or --set run.overwrite=true")
        plan.append((combo, settings, combo_overrides, run_dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps(
        {"config": str(cfg_path), "sweeps": list(sweeps), "overrides": list(overrides),
         "metric": metric, "mode": mode}, indent=2) + "\n")

    def say(*parts, **kwargs):
        if not quiet:
            print(*parts, **kwargs)

    say(f"sweep {name}: {len(plan)} runs in {sweep_dir}")
    results = []
    for number, (combo, settings, combo_overrides, run_dir) in enumerate(plan, start=1):
        command = [python, str(train_script), "--cfg", str(cfg_path)]
        for item in combo_overrides:
            command += ["--set", item]
        log_path = sweep_dir / f"{combo}.log"
        say(f"[{number}/{len(plan)}] {combo} ... ", end="", flush=True)
        started = time.perf_counter()
        with open(log_path, "w") as log:
            exit_code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - started
        result = SweepResult(combo, settings, run_dir, exit_code, wall, best_evaluation(run_dir, metric, mode))
        results.append(result)
        value = (result.best or {}).get(metric)
        shown = f", {metric} {value:.4f}" if isinstance(value, (int, float)) else ""
        say(f"{result.status} ({wall:.1f} s{shown})")
        if exit_code != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            say("\n".join(f"    {line}" for line in tail) + f"\n    (full output: {log_path})")

    results = sort_results(results, metric, mode)
    write_csv(sweep_dir / "sweep.csv", results, metric)
    say(format_table(results, metric, mode))
    say(f"table: {sweep_dir / 'sweep.csv'}")
    if len({r.settings.get(SEED_KEY) for r in results}) > 1:
        summary = summarise_over_seeds(results, metric, mode)
        write_seed_csv(sweep_dir / "sweep_seeds.csv", summary)
        say(format_seed_table(summary, metric, mode))
        say(f"over seeds: {sweep_dir / 'sweep_seeds.csv'}")
    from qa_core.plots import plot_sweep

    plot = plot_sweep(sweep_dir, [r.run_dir for r in results], metric)
    if plot is not None:
        say(f"curves: {plot}")
    return results


def best_evaluation(run_dir: Path, metric: str, mode: str) -> dict | None:
    """The run's evaluation with the best `metric` (earliest on ties), or None."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    best = None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a run killed mid-write
        value = record.get(metric) if record.get("event") == "eval" else None
        if not isinstance(value, (int, float)) or math.isnan(value):
            continue
        if best is None or (value > best[metric] if mode == "max" else value < best[metric]):
            best = record
    return best


def sort_results(results: list[SweepResult], metric: str, mode: str) -> list[SweepResult]:
    def key(result: SweepResult):
        value = (result.best or {}).get(metric)
        if not isinstance(value, (int, float)):
            return (2, 0.0)
        return (0 if result.exit_code == 0 else 1, -value if mode == "max" else value)

    return sorted(results, key=key)


def write_csv(path: Path, results: list[SweepResult], metric: str) -> None:
    keys = list(results[0].settings) if results else []
    columns = ["combination", *keys, *CSV_COLUMNS[1:]]
    if metric not in columns:
        columns.insert(columns.index("best_step"), metric)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for result in results:
            writer.writerow(result.row(metric))


def format_table(results: list[SweepResult], metric: str, mode: str) -> str:
    keys = list(results[0].settings) if results else []
    metric_columns = [(metric, metric)] if metric not in EVAL_COLUMNS else []
    columns = ([(k.rsplit(".", 1)[-1], k) for k in keys] + metric_columns +
               [("val EM", "val_exact"), ("val F1", "val_f1"), ("val loss", "val_loss"),
                ("train acc", "train_token_acc"), ("val acc", "val_token_acc"), ("gap", "train_val_gap"),
                ("best ep", "best_epoch"), ("wall s", "wall_s"), ("status", "status")])
    rows = [[_cell(r.row(metric)[key], key) for _, key in columns] for r in results]
    widths = [max(len(title), *(len(row[i]) for row in rows)) if rows else len(title)
              for i, (title, _) in enumerate(columns)]
    lines = [f"sorted by {metric} ({mode})", "  ".join(t.rjust(w) for (t, _), w in zip(columns, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def summarise_over_seeds(results: list[SweepResult], metric: str, mode: str) -> list[dict]:
    """One row per combination of the swept keys other than SEED_KEY: how many of its seeds
    finished, and the mean and sample standard deviation (None for one run) over those of the
    metric and SEED_SUMMARY_COLUMNS. Sorted by the metric's mean; combinations without a
    finished run last."""
    columns = list(dict.fromkeys((metric, *SEED_SUMMARY_COLUMNS)))
    groups: dict[tuple, list[SweepResult]] = {}
    for result in results:
        others = tuple((k, v) for k, v in result.settings.items() if k != SEED_KEY)
        groups.setdefault(others, []).append(result)
    rows = []
    for others, members in groups.items():
        finished = [r.row(metric) for r in members if r.exit_code == 0 and r.best is not None]
        row = {**dict(others), "seeds": len(finished), "of_seeds": len(members)}
        for column in columns:
            values = [f[column] for f in finished if isinstance(f[column], (int, float))]
            row[f"{column}_mean"] = statistics.mean(values) if values else None
            row[f"{column}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)

    def key(row):
        mean = row[f"{metric}_mean"]
        return (1, 0.0) if mean is None else (0, -mean if mode == "max" else mean)

    return sorted(rows, key=key)


def write_seed_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["seeds"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def format_seed_table(rows: list[dict], metric: str, mode: str) -> str:
    stats = [k[:-5] for k in (rows[0] if rows else {}) if k.endswith("_mean")]
    keys = [k for k in (rows[0] if rows else {}) if k not in ("seeds", "of_seeds") and not k.endswith(("_mean", "_sd"))]
    titles = [k.rsplit(".", 1)[-1] for k in keys] + ["seeds"] + [f"{s} (mean +- sd)" for s in stats]
    cells = []
    for row in rows:
        line = [str(row[k]) for k in keys] + [f"{row['seeds']}/{row['of_seeds']}"]
        for stat in stats:
            mean, sd = row[f"{stat}_mean"], row[f"{stat}_sd"]
            digits = 4 if ("loss" in stat or "acc" in stat or "gap" in stat) else 2
            line.append("-" if mean is None else f"{mean:.{digits}f}" + ("" if sd is None else f" +- {sd:.{digits}f}"))
        cells.append(line)
    widths = [max(len(t), *(len(c[i]) for c in cells)) if cells else len(t) for i, t in enumerate(titles)]
    lines = [f"over seeds ({SEED_KEY}), sorted by mean {metric} ({mode})",
             "  ".join(t.rjust(w) for t, w in zip(titles, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value, key: str) -> str:
    if value == "" or value is None:
        return "-"
    if isinstance(value, float) and key != "wall_s":
        return f"{value:.4f}" if ("loss" in key or "acc" in key or "gap" in key) else f"{value:.2f}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Command line (train.py --sweep ...)


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sweeps")
    group.add_argument("--sweep", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                       help="sweep this key over these values (repeatable: the grid of all of them); "
                            "runs one training process per combination")
    group.add_argument("--sweep-metric", default="val_f1", help="rank runs by this evaluation metric (default val_f1)")
    group.add_argument("--sweep-mode", default="max", choices=("min", "max"), help="max (default) or min")
    group.add_argument("--sweep-name", default=None,
                       help="directory under run.output_dir (default sweep-<config>-<time>)")


def main_from_args(args: argparse.Namespace) -> int:
    """0: every run finished; 1: some run failed; 2: the sweep could not start."""
    try:
        if getattr(args, "resume", None):
            raise ConfigError("--sweep starts new runs; it cannot be combined with --resume")
        if args.cfg is None:
            raise ConfigError("--sweep needs --cfg configs/<name>.toml")
        results = run_sweep(args.cfg, args.sweep, args.overrides, metric=args.sweep_metric,
                            mode=args.sweep_mode, name=args.sweep_name)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if all(r.exit_code == 0 for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", help="TOML config shared by every run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value in every run; repeatable")
    add_sweep_arguments(parser)
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
