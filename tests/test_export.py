"""Export: a run's best/ or one of its resumable checkpoints -> Hugging Face layout that
transformers loads with the same weights and logits; clear errors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from qa_core.config import Config, to_dict
from qa_core.export import export, main
from qa_core.modeling import load_model
from qa_core.predict import Answerer

transformers = pytest.importorskip("transformers")


def perturbed(model_dir, scale: float):
    """The tiny model with changed encoder and head weights: a stand-in for fine-tuned weights."""
    model = load_model(str(model_dir))
    with torch.no_grad():
        model.qa_outputs.weight.mul_(scale).add_(0.1)
        model.layers[0].parameters().__next__().mul_(scale)
    return model


@pytest.fixture()
def run_dir(tiny_bert_dir, tmp_path):
    """A run directory as the training loop leaves it: best/ and two resumable checkpoints."""
    run = tmp_path / "runs" / "tiny"
    cfg = dataclasses.replace(Config(), model=dataclasses.replace(Config().model, name_or_path=str(tiny_bert_dir)))
    perturbed(tiny_bert_dir, 3.0).save_pretrained(run / "best", tokenizer_dir=tiny_bert_dir)
    (run / "checkpoints").mkdir(parents=True)
    for step, scale in ((5, 5.0), (10, 7.0)):
        torch.save({"model": perturbed(tiny_bert_dir, scale).state_dict(), "config": to_dict(cfg),
                    "train_state": {"step": step}}, run / "checkpoints" / f"checkpoint-{step}.pt")
    return run


def transformers_logits(model_dir, question="Who runs the trams?", context="The city council runs the trams."):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(model_dir)).eval()
    inputs = tokenizer(question, context, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    return inputs, out.start_logits, out.end_logits


@pytest.mark.parametrize("which, scale", [("latest", 7.0), ("checkpoint-5.pt", 5.0)])
def test_checkpoint_export_loads_in_transformers_with_the_checkpoint_weights(run_dir, tiny_bert_dir, tmp_path,
                                                                          which, scale):
    out = export(run_dir, tmp_path / "out", checkpoint=which)
    expected = perturbed(tiny_bert_dir, scale).eval()
    exported = load_model(str(out))
    for name, tensor in expected.state_dict().items():
        assert torch.equal(exported.state_dict()[name], tensor), name
    inputs, start, end = transformers_logits(out)
    with torch.no_grad():
        our_start, our_end = expected(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    torch.testing.assert_close(start, our_start, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(end, our_end, rtol=1e-5, atol=1e-5)
    assert (out / "tokenizer.json").exists()


def test_default_export_is_best_byte_for_byte(run_dir, tmp_path, capsys):
    assert main([str(run_dir), str(tmp_path / "out")]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (tmp_path / "out" / name).read_bytes() == (run_dir / "best" / name).read_bytes()
    assert "exported to" in capsys.readouterr().out


def test_checkpoint_file_as_source(run_dir, tiny_bert_dir, tmp_path):
    out = export(run_dir / "checkpoints" / "checkpoint-5.pt", tmp_path / "out")
    assert torch.equal(load_model(str(out)).qa_outputs.weight, perturbed(tiny_bert_dir, 5.0).qa_outputs.weight)


def test_predictor_on_a_run_directory_uses_best(run_dir):
    question, context = "Who runs the trams?", "The city council runs the trams of Velmora since 1902."
    from_run = Answerer.from_pretrained(run_dir, device="cpu").answer(question, context, top_k=3)
    from_best = Answerer.from_pretrained(run_dir / "best", device="cpu").answer(question, context, top_k=3)
    assert from_run == from_best


def test_export_errors(run_dir, tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (run_dir / "best" / "model.safetensors").unlink()
    assert main([str(run_dir), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "best" in err and "--checkpoint latest" in err
    assert main([str(run_dir), str(tmp_path / "out"), "--checkpoint", "checkpoint-99.pt"]) == 2
    assert "checkpoint-99.pt" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    assert main([str(run_dir), str(tmp_path / "full"), "--checkpoint", "latest"]) == 2
    assert "not a model directory" in capsys.readouterr().err
