"""Conversation logic shared by the command line, the evaluation and the Rasa actions.

The state is a plain dict whose keys are the Rasa slot names, so an action can pass the tracker's
slots in and set the returned values as SlotSet events: one behaviour on every channel.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from assistant import answer, config
from assistant.entities import REC_ID_LABEL, affirmed_concepts, without_spans
from assistant.lexicon import load_yaml_validated

SLOTS = ("cg81_topic", "sex", "menopausal_status", "er_status", "her2_status", "prior_therapy",
         "metastasis_site", "pending_clarification", "last_answer_ids")
_FOLLOWUP_START = re.compile(
    r"^\s*(and|what about|how about|what if|and if|if|but|same|ok(ay)?,? and|also|in|for|then|after that|"
    r"what'?s next|next)\b", re.IGNORECASE)
_SECTION_RE = re.compile(r"\bsection\s*(1\.[1-5]|[1-5])\b(?!\.\d)", re.IGNORECASE)
_LIST_RE = re.compile(r"\b(list|show (me )?(all|every)|all (the |of the )?(recs?|recommendations?)\b|"
                      r"every recommendation|summari[sz]e|(recs|recommendations) (for|on|about|in)\b)",
                      re.IGNORECASE)
_RESEARCH_LIST_RE = re.compile(r"\bresearch rec", re.IGNORECASE)
# Short messages that point back ("which one?", "anything after that?", "who coordinates her care?").
_ANAPHORA = re.compile(r"\b(she|her|he|him|his|they|them|it|that|this|those|these|one|then|instead)\b", re.I)
# An ellipsis is made of ordinary question words; a short string with none of them is noise, not a
# follow-up, and must not be answered from the earlier question ("qwzx vbnm").
_QUESTION_WORDS = re.compile(
    r"\b(what|which|who|whom|how|when|why|where|and|or|after|before|then|next|else|more|also|anything|any|"
    r"other|one|that|this|she|he|her|his|they|them|it|so|instead|too|though|about|should|can|do|does|is|"
    r"are|if)\b", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
# Labels that only describe the patient: a message made of these (and little else) refines the
# previous question instead of starting a new one.
_PATIENT_LABELS = {"SEX", "MENOPAUSAL_STATUS", "RECEPTOR", "PRIOR_THERAPY", "LINE_OF_THERAPY"}
FOLLOWUP_INTENTS = {"follow_up", "clarify"}
_PROBLEM_LABELS = {"COMPLICATION", "MET_SITE"}


@dataclass
class Reply:
    kind: str                 # answer | abstain | clarify | lookup | list | invalid
    text: str
    payload: dict | None
    state: dict
    buttons: list = field(default_factory=list)
    query: str = ""           # the context-merged question that was searched


def clean(message) -> str:
    """Drop control and format characters and fold whitespace; what is left is what we search."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    text = unicodedata.normalize("NFKC", str(message))
    return " ".join(_CONTROL.sub(" ", text).split())


class DialogueRules:
    def __init__(self, data: dict) -> None:
        self.attributes = data["patient_attributes"]
        self.clarifications = data["clarifications"]
        self.problems = set(data["topic_change"]["problems"])
        self.drops_labels = set(data["topic_change"]["drops_labels"])
        self.concept_slot = {c: slot for slot, spec in self.attributes.items() for c in spec["concepts"]}

    @classmethod
    def load(cls, path=None) -> DialogueRules:
        schema = config.CORPUS_DIR / "terminology" / "dialogue.schema.json"
        return cls(load_yaml_validated(path or config.DIALOGUE_RULES_PATH, schema))

    def group_of(self, concept: str) -> str | None:
        slot = self.concept_slot.get(concept)
        return self.attributes[slot]["group"] if slot else None


class Assistant:
    """One turn in, one reply out: answer, clarify, look up, list, or abstain."""

    def __init__(self, retriever, rules: DialogueRules | None = None, mode: str = "hybrid",
                 abstain: bool = True) -> None:
        self.retriever = retriever
        self.mode = mode          # "bm25" / "dense" only for the baselines in the evaluation
        self.abstain = abstain
        self.extractor = retriever.extractor
        self.rules = rules or DialogueRules.load()

    # ------------------------------------------------------------------ helpers
    def _patient_context(self, concepts: set) -> dict:
        """Patient attributes of the (context-merged) question: a follow-up's query keeps the earlier
        attributes it did not restate, so this is the whole conversation's view of the patient."""
        ctx: dict = {}
        for c in sorted(concepts):
            slot = self.rules.concept_slot.get(c)
            if slot:
                ctx[slot] = c
        return ctx

    def _is_followup(self, text: str, entities: list, state: dict, intent: str | None) -> bool:
        if not state.get("cg81_topic"):
            return False
        labels = {e.label for e in entities if e.label != REC_ID_LABEL}
        if not labels and not _QUESTION_WORDS.search(text):
            return False  # noise is never read as a follow-up, whatever the classifier said
        if intent in FOLLOWUP_INTENTS or state.get("pending_clarification"):
            return True
        words = re.findall(r"[A-Za-z0-9+]+", text)
        if _FOLLOWUP_START.match(text) and len(words) <= 10:
            return True
        if len(words) <= 6 and (not labels or _ANAPHORA.search(text)) and not labels & _PROBLEM_LABELS:
            return True
        if bool(labels) and labels <= _PATIENT_LABELS and len(words) <= 8:
            return True
        # The conversation is about a described patient: a question that neither re-describes the
        # patient nor raises a new clinical problem continues it ("... progressed on letrozole" →
        # "what's the next endocrine option?").
        described = any(state.get(s) for s in self.rules.attributes if s != "metastasis_site")
        return described and not labels & _PATIENT_LABELS and not self._new_problem(state["cg81_topic"], entities)

    def _new_problem(self, topic: str, entities: list) -> bool:
        closure = self.extractor.lexicon.closure
        old = closure(e.value for e in self.extractor.extract(topic)) & self.rules.problems
        return bool((closure(e.value for e in entities) & self.rules.problems) - old)

    def _group(self, entity) -> str:
        """Attributes that replace each other in a follow-up: patient group (sex or menopausal status),
        receptor, prior therapy...; otherwise the lexicon label (a new therapy replaces the old one)."""
        return self.rules.group_of(entity.value) or entity.label

    def merge(self, topic: str, text: str, entities: list) -> str:
        """The previous question minus what this message restates, then this message.

        A restated attribute replaces its earlier value ("and for men?" drops "postmenopausal"); a new
        clinical problem (a complication or metastasis site) also drops the earlier treatments, which
        belonged to the earlier problem ("CDT for lymphoedema?" → "what about fatigue?").
        """
        groups = {self._group(e) for e in entities if e.label not in ("CONDITION", REC_ID_LABEL)}
        old = self.extractor.extract(topic)
        new_problem = self._new_problem(topic, entities)
        kept = without_spans(topic, [e for e in old if self._group(e) in groups
                                     or (new_problem and e.label in self.rules.drops_labels)])
        return f"{' '.join(kept.split())} {text}"

    def _clarify_or_rerank(self, ranked: list, concepts: set, ctx: dict) -> tuple:
        """Apply each clarification rule in turn: a known attribute moves its recommendations to the
        top; an unknown one that the top answers depend on yields (rule, ranked) to ask about."""
        known = set(concepts) | set(ctx.values())
        for rule in self.rules.clarifications:
            top = [c.id for c in ranked[: rule.get("top_k", 4)]]
            if not top or top[0] not in rule["trigger_top"]:
                continue
            if rule.get("requires_any") and not known & set(rule["requires_any"]):
                continue
            chosen = [o for o in rule["options"] if known & set(o["concepts"])]
            if len(chosen) == 1:
                others = {i for o in rule["options"] if o is not chosen[0] for i in o["recommendations"]}
                others -= set(chosen[0]["recommendations"])
                # Recommendations for the other patient groups do not apply: never "also relevant".
                ranked = [c for c in self._promote(ranked, chosen[0]["recommendations"]) if c.id not in others]
                continue
            present = [o for o in rule["options"] if set(o["recommendations"]) & set(top)]
            if not chosen and len(present) >= rule.get("min_options_in_top", 2):
                return rule, ranked
        return None, ranked

    def _promote(self, ranked: list, ids: list) -> list:
        from assistant.retrieval import Candidate

        have = {c.id: c for c in ranked}
        first = [have.get(i) or Candidate(i, score=0.0) for i in ids]
        return first + [c for c in ranked if c.id not in ids]

    # ------------------------------------------------------------------ turn
    def respond(self, message, state: dict | None = None, intent: str | None = None) -> Reply:
        state = {s: (state or {}).get(s) for s in SLOTS}
        raw_len = len(message) if isinstance(message, (str, bytes)) else 0
        text = clean(message) if message is not None else ""
        if not text:
            return Reply("invalid", answer.EMPTY_MESSAGE, None, state)
        if raw_len > config.MAX_QUESTION_CHARS:
            return Reply("invalid", answer.too_long(config.MAX_QUESTION_CHARS), None, state)

        entities = self.extractor.extract(text)
        rec_ids = list(dict.fromkeys(e.value for e in entities if e.label == REC_ID_LABEL))
        if rec_ids:
            return self.lookup(rec_ids, state, text)
        listing = self._list_request(text, intent, state)
        if listing is not None:
            return listing

        followup = self._is_followup(text, entities, state, intent)
        query = self.merge(state["cg81_topic"], text, entities) if followup else text
        result = self.retriever.search(query, mode=self.mode, abstain=self.abstain,
                                       focus=text if followup else None)
        concepts = affirmed_concepts(self.extractor.lexicon, entities)
        lex = self.extractor.lexicon.concepts
        own_oos = sorted(c for c in concepts if lex[c].out_of_scope)
        if (own_oos and self.abstain) or result.abstained:
            reason = "out_of_scope:" + ",".join(own_oos) if own_oos else result.reason
            return Reply("abstain", answer.abstention_text(reason), answer.abstention_payload(reason), state,
                         query=query)

        ctx = self._patient_context(result.concepts)
        new_state = {**state, **{s: None for s in self.rules.attributes}, **ctx,
                     "cg81_topic": query if followup else text, "pending_clarification": None}
        ranked = list(result.candidates)
        rule, ranked = self._clarify_or_rerank(ranked, result.concepts, ctx)
        if rule:
            # The recommendation that holds whatever the answer (1.3.1) first, then the ones that differ.
            top_ids = [c.id for c in ranked[: rule.get("top_k", 4)]]
            ids = [i for i in rule.get("general", []) if i in top_ids]
            ids += [c.id for c in ranked if c.id in rule["trigger_top"] and c.id not in ids]
            scores = {c.id: c.score for c in ranked}
            clar = {"question": rule["question"], "options": [o["label"] for o in rule["options"]]}
            new_state.update(pending_clarification=rule["id"], last_answer_ids=ids)
            answers = [answer.answer_item(self.retriever.by_id[i], scores.get(i)) for i in ids]
            return Reply("clarify", answer.clarification_text(clar, answers),
                         answer.payload(answers, clarification=clar), new_state,
                         buttons=[{"title": o, "payload": o} for o in clar["options"]], query=query)
        shown = [ranked[0]] + [c for c in ranked[1:3] if c.score >= self._min_score()]
        answers = [answer.answer_item(self.retriever.by_id[c.id], c.score) for c in shown]
        new_state["last_answer_ids"] = [a["id"] for a in answers]
        return Reply("answer", answer.answer_text(answers), answer.payload(answers), new_state, query=query)

    @staticmethod
    def _min_score() -> float:
        from assistant.retrieval import MIN_ANSWER_SCORE

        return MIN_ANSWER_SCORE

    def lookup(self, rec_ids: list, state: dict, text: str = "") -> Reply:
        found = [i for i in rec_ids if i in self.retriever.by_id]
        missing = [i for i in rec_ids if i not in self.retriever.by_id]
        if not found:
            return Reply("abstain", answer.unknown_ids_text(missing), answer.abstention_payload("unknown_id"),
                         state)
        answers = [answer.answer_item(self.retriever.by_id[i], 1.0) for i in found]
        new_state = {**state, "cg81_topic": self.retriever.doc_text(self.retriever.by_id[found[0]]),
                     "pending_clarification": None, "last_answer_ids": found}
        return Reply("lookup", answer.answer_text(answers, missing=missing), answer.payload(answers), new_state)

    def _list_request(self, text: str, intent: str | None, state: dict) -> Reply | None:
        section = _SECTION_RE.search(text)
        if section:
            sec = section.group(1)
            sec = sec if "." in sec else f"1.{sec}"
            ids = [r["id"] for r in self.retriever.records if r["section"] == sec]
        elif (_RESEARCH_LIST_RE.search(text) and (_LIST_RE.search(text) or intent == "list_recommendations")
              and not self.retriever.topical_concepts(text) - {"research"}):
            # "all research recommendations"; "research recs on chemo sequencing" is searched instead.
            ids = [r["id"] for r in self.retriever.records if r["kind"] == "research"]
        elif _LIST_RE.search(text):
            # The wording decides, not the classifier: "does NICE say anything about X?" is a question
            # even when it is classified as a list request.
            result = self.retriever.search(text)
            if result.abstained:
                return None
            top = self.retriever.by_id[result.candidates[0].id]
            ids = [r["id"] for r in self.retriever.records
                   if r["section"] == top["section"] and r.get("subsection") == top.get("subsection")]
        else:
            return None
        if not ids:
            return None
        records = [self.retriever.by_id[i] for i in ids]
        answers = [answer.answer_item(r, None) for r in records]
        new_state = {**state, "pending_clarification": None, "last_answer_ids": ids}
        return Reply("list", answer.list_text(records), answer.payload(answers), new_state)
