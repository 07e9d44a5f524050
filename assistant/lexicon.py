"""The CG81 clinical terminology: concepts with their surface forms, loaded from versioned YAML.

Kept free of torch and of anything newer than spaCy 3.4 / Python 3.10, because the Rasa server's
NLU component imports it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from assistant import config

SCHEMA_PATH = config.CORPUS_DIR / "terminology" / "lexicon.schema.json"


class LexiconError(ValueError):
    """The terminology file is malformed or inconsistent."""


@dataclass(frozen=True)
class Concept:
    id: str
    label: str
    expansion: str
    terms: tuple
    broader: tuple

    @property
    def out_of_scope(self) -> bool:
        return self.label == "OUT_OF_SCOPE"


def load_yaml_validated(path: Path, schema_path: Path, error: type = ValueError) -> dict:
    """Read a YAML data file and validate it against its JSON schema, with a readable error."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"cannot read {path}: {exc}") from exc
    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise error(f"{path}: {where}: {exc.message}") from exc
    return data


def _shorthand_variants(term: str, shorthand: dict) -> list:
    """'endocrine treatment' -> ['endocrine tx', 'endocrine rx']: each shorthand of each multi-word term's
    words (single words are left alone: 'tx' on its own means nothing)."""
    words = term.split()
    if len(words) < 2:
        return []
    out = []
    for i, w in enumerate(words):
        for v in shorthand.get(w, ()):
            out.append(" ".join(words[:i] + [v] + words[i + 1:]))
    return out


class Lexicon:
    def __init__(self, concepts: list[Concept], labels: list[str], version: int,
                 inferences: list | None = None, not_typos=()) -> None:
        self.version = version
        # Ordinary words one edit away from a lexicon word ('presenting' ~ 'preventing'): never corrected.
        self.not_typos = frozenset(w.lower() for w in not_typos)
        self.inferences = [(frozenset(i["if_all"]), tuple(i["then"])) for i in inferences or []]
        self.labels = labels
        self.concepts = {c.id: c for c in concepts}

    @classmethod
    def load(cls, path: Path | None = None) -> Lexicon:
        path = path or config.LEXICON_PATH
        data = load_yaml_validated(path, SCHEMA_PATH, LexiconError)
        labels = data["labels"]
        concepts = []
        seen_terms: dict[str, str] = {}
        explicit = {t.strip().lower() for raw in data["concepts"] for t in raw["terms"]}
        shorthand = {w.lower(): [v.lower() for v in vs] for w, vs in (data.get("shorthand") or {}).items()}
        for raw in data["concepts"]:
            if raw["label"] not in labels:
                raise LexiconError(f"{path}: concept {raw['id']} has unknown label {raw['label']}")
            if raw["label"] == "OUT_OF_SCOPE" and not raw["id"].startswith("oos_"):
                raise LexiconError(f"{path}: out-of-scope concept {raw['id']} must start with 'oos_'")
            terms = tuple(t.strip().lower() for t in raw["terms"])
            for term in terms:
                if term in seen_terms:
                    raise LexiconError(f"{path}: term {term!r} is in both {seen_terms[term]} and {raw['id']}")
                seen_terms[term] = raw["id"]
            generated = [v for t in terms for v in _shorthand_variants(t, shorthand)
                         if v not in explicit and v not in seen_terms]
            for v in dict.fromkeys(generated):
                seen_terms[v] = raw["id"]
            terms += tuple(dict.fromkeys(generated))
            concepts.append(Concept(raw["id"], raw["label"], raw.get("expansion") or raw["id"].replace("_", " "),
                                    terms, tuple(raw.get("broader", []))))
        ids = [c.id for c in concepts]
        if len(ids) != len(set(ids)):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise LexiconError(f"{path}: duplicated concept ids {dup}")
        for c in concepts:
            for b in c.broader:
                if b not in ids:
                    raise LexiconError(f"{path}: concept {c.id} names unknown broader concept {b}")
        for rule in data.get("inferences", []):
            unknown = [c for c in rule["if_all"] + rule["then"] if c not in ids]
            if unknown:
                raise LexiconError(f"{path}: inference names unknown concepts {unknown}")
        return cls(concepts, labels, data["version"], data.get("inferences"), data.get("not_typos", ()))

    def expansion(self, concept_ids) -> str:
        """The guideline's wording for these concepts ('Herceptin' is also searched as 'trastuzumab')."""
        return " ".join(sorted({self.concepts[c].expansion for c in concept_ids if c in self.concepts}))

    def closure(self, concept_ids, infer: bool = True) -> set:
        """Concepts with everything they imply: 'letrozole' → 'aromatase_inhibitor', and (unless `infer`
        is false) the combinations in `inferences` ('tamoxifen' + 'progression' → 'progressed_on_tamoxifen')."""
        out: set = set()
        stack = list(concept_ids)
        while True:
            while stack:
                cid = stack.pop()
                if cid in out or cid not in self.concepts:
                    continue
                out.add(cid)
                stack.extend(self.concepts[cid].broader)
            if not infer:
                return out
            stack = [c for need, then in self.inferences if need <= out for c in then if c not in out]
            if not stack:
                return out

    def fingerprint(self) -> str:
        from assistant.corpus import sha256_text

        return sha256_text(json.dumps([{k: [c.label, c.expansion, c.terms, c.broader]
                                        for k, c in sorted(self.concepts.items())},
                                       [[sorted(n), list(t)] for n, t in self.inferences]]
                                      + ([sorted(self.not_typos)] if self.not_typos else [])))
