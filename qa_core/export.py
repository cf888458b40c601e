"""Export a trained run in Hugging Face layout, optionally pushing it to the Hub.

    python -m qa_core.export runs/my-run out/my-model                       # copy of best/
    python -m qa_core.export runs/my-run out/my-model --checkpoint latest   # newest resumable checkpoint
    python -m qa_core.export runs/my-run/checkpoints/checkpoint-800.pt out/my-model
    python -m qa_core.export runs/my-run out/my-model --push-to-hub me/my-qa-model --private

The output (config.json, model.safetensors, tokenizer files) loads in qa-core and in
transformers' AutoModelForQuestionAnswering / AutoTokenizer.

A checkpoint holds only the weights; the model around them is rebuilt from the run's
config saved inside it (model.name_or_path), so that base model must still be resolvable.
Tokenizer files come from the run's best/ when it has one, else from that base model.

The Hub push (`push_to_hub`) is two huggingface_hub calls, HfApi.create_repo and
HfApi.upload_folder; it cannot be exercised in this offline environment and is untested here.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from qa_core.checkpoint import CHECKPOINT_PATTERN, list_checkpoints
from qa_core.hub import ModelNotFoundError, resolve_model_dir
from qa_core.modeling import load_model
from qa_core.tokenization import TOKENIZER_FILES

__all__ = ["ExportError", "export", "find_checkpoint", "push_to_hub", "main"]

HF_FILES = ("config.json", "model.safetensors") + TOKENIZER_FILES


class ExportError(ValueError):
    """The run, checkpoint or output directory cannot be used; the message says why and what to do."""


def find_checkpoint(source: Path, which: str) -> Path | None:
    """The checkpoint file to export, or None for the run's best/ ("best")."""
    if source.is_file():
        if which not in ("best", "latest"):
            raise ExportError(f"{source} is already a checkpoint file; drop --checkpoint {which}")
        return source
    if which == "best":
        return None
    if which == "latest":
        found = list_checkpoints(source)
        if not found:
            raise ExportError(f"{source / 'checkpoints'}: no checkpoint-<step>.pt files; export best/ instead "
                              f"(--checkpoint best)")
        return found[-1]
    path = Path(which)
    if not path.is_file() and (source / "checkpoints" / which).is_file():
        path = source / "checkpoints" / which
    if not path.is_file():
        raise ExportError(f"--checkpoint {which}: no such file; use best, latest or the path of a "
                          f"checkpoint-<step>.pt file")
    return path


def export(source: str | Path, out_dir: str | Path, *, checkpoint: str = "best") -> Path:
    """Write the model of `source` (a run directory or a checkpoint file) to out_dir in HF layout."""
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise ExportError(f"{source}: no such run directory or checkpoint file")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "config.json").exists():
        raise ExportError(f"{out_dir}: exists and is not a model directory; choose an empty or new directory")
    path = find_checkpoint(source, checkpoint)
    if path is None:
        return _copy_best(source, out_dir)
    return _export_checkpoint(path, out_dir)


def _copy_best(run_dir: Path, out_dir: Path) -> Path:
    best = run_dir / "best"
    if not (best / "config.json").exists() or not (best / "model.safetensors").exists():
        raise ExportError(f"{best}: no exported best model (config.json + model.safetensors); export a "
                          f"checkpoint instead with --checkpoint latest")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in HF_FILES:
        if (best / name).exists():
            shutil.copyfile(best / name, out_dir / name)
    return out_dir


def _export_checkpoint(path: Path, out_dir: Path) -> Path:
    # Our own resumable checkpoints carry optimizer state and RNG tuples: full unpickling needed,
    # so only export checkpoints you made.
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ExportError(f"{path}: not a qa-core resumable checkpoint (expected a dict with 'model' and "
                          f"'config')")
    model_cfg = state["config"].get("model", {})
    base = model_cfg.get("name_or_path")
    try:
        base_dir = resolve_model_dir(base, revision=model_cfg.get("revision"), cache_dir=model_cfg.get("cache_dir"))
    except ModelNotFoundError as error:
        raise ExportError(f"{path}: its base model {base!r} (model.name_or_path) cannot be found to rebuild the "
                          f"architecture: {str(error).splitlines()[0]}") from None
    dropout = {k: v for k, v in (model_cfg.get("dropout") or {}).items() if v is not None}
    model = load_model(str(base_dir), dropout=dropout)
    model.load_state_dict(state["model"])
    run_best = _run_dir_of(path) / "best"
    tokenizer_dir = run_best if (run_best / "config.json").exists() else base_dir
    return model.save_pretrained(out_dir, tokenizer_dir=tokenizer_dir)


def _run_dir_of(checkpoint: Path) -> Path:
    # runs/<name>/checkpoints/checkpoint-<step>.pt
    if CHECKPOINT_PATTERN.match(checkpoint.name) and checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent
    return checkpoint.parent


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Create the model repo (if needed) and upload the folder; returns the commit URL.

    Untested here (no network): only huggingface_hub's documented create_repo/upload_folder."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                               commit_message="Upload extractive QA model exported by qa-core")
    return str(commit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa_core.export", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="run directory or checkpoint-<step>.pt file")
    parser.add_argument("out", help="output directory (Hugging Face layout)")
    parser.add_argument("--checkpoint", default="best",
                        help="best (the run's best/, default), latest, or a checkpoint file")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also upload to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login)")
    args = parser.parse_args(argv)
    try:
        out = export(args.source, args.out, checkpoint=args.checkpoint)
    except ExportError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"exported to {out}")
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(out, args.push_to_hub, private=args.private, token=args.token)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
