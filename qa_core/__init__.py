"""qa-core: fine-tune extractive question-answering encoders with a readable PyTorch loop."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_model", "load_tokenizer", "QAModel", "__version__"]


def __getattr__(name):
    # Lazy imports keep `import qa_core` (and `python -m qa_core.data`) light.
    if name in ("load_model", "QAModel"):
        from qa_core import modeling

        return getattr(modeling, name)
    if name == "load_tokenizer":
        from qa_core.tokenization import load_tokenizer

        return load_tokenizer
    if name == "Answerer":
        from qa_core.predict import Answerer

        return Answerer
    raise AttributeError(f"module 'qa_core' has no attribute {name!r}")
