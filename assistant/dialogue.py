"""Conversation logic shared by the command line, the evaluation and the Rasa actions.

The state is a plain dict whose keys are the Rasa slot names, so an action can pass the tracker's
slots in and set the returned values as SlotSet events: one behaviour on every channel. It is
structured, never concatenated text:

- the patient profile (sex, age group, menopausal status, ER/HER2, prior therapies, metastatic sites,
  line of therapy), filled from any turn and kept until the clinician starts a new patient; it decides
  which recommendations apply (rerank, clarification) and is never searched as words;
- the current topic as concepts by role (problem, intervention, aspect). Each turn searches on its own
  concepts and takes from the topic only the roles it leaves out.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from dataclasses import dataclass, field

from assistant import answer, config
from assistant.corpus import sha256_text
from assistant.lexicon import load_yaml_validated
from assistant.profile import PROFILE_SLOTS, ProfileRules
from assistant.query import Analyzer, Query

SLOTS = ("topic", *PROFILE_SLOTS, "pending_clarification", "last_answer_ids")
_SINCE_RE = re.compile(r"\b(since|after|post|(?:newer|later|more recent) than)\s+(the\s+)?(original\s+|first\s+)?"
                       r"(cg81\s+)?(20[0-3]\d)\b", re.IGNORECASE)
# "Since CG81 first came out", "since the original guideline": since its first publication.
_SINCE_FIRST_RE = re.compile(r"\b(?:since|after)\s+(?:(?:cg81|it|nice|the\s+guidelines?|the\s+guidance)\s+)?(?:was\s+)?"
                             r"(?:first\s+)?(?:came\s+out|published|issued|originally)\b|\bsince\s+the\s+original\b",
                             re.IGNORECASE)
_SECTION_RE = re.compile(r"\bsection\s*(1\.[1-5]|[1-5])\b(?!\.\d)", re.IGNORECASE)
_LIST_RE = re.compile(r"\b(list|show (me )?(all|every)|all (the |of the )?(recs?|recommendations?)\b|"
                      r"every recommendation|summari[sz]e|(recs|recommendations) (for|on|about|in)\b)",
                      re.IGNORECASE)
_RESEARCH_LIST_RE = re.compile(r"\bresearch rec", re.IGNORECASE)
# An ellipsis is made of ordinary question words; a short string with none of them is noise, not a
# follow-up, and must not be answered from the earlier question ("qwzx vbnm", "thanks").
_QUESTION_WORDS = re.compile(
    r"\b(what|which|who|whom|how|when|why|where|and|or|after|before|then|next|else|more|also|anything|any|"
    r"other|one|that|this|she|he|her|his|they|them|it|so|instead|too|though|about|should|can|do|does|is|"
    r"are|if|now|treatment|treat|tx|manage|management|mgmt|plan|options?|approach|recommend(ed)?|offer)\b", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
FOLLOWUP_INTENTS = {"follow_up", "clarify"}
_OFFER_RE = re.compile(r"\b(?:offer|consider)(?: using| offering)?\s+(?P<what>.+?)(?=\s+(?:to|for|as|following|after|"
                       r"in|within|on)\b|[:.,;]|$)", re.IGNORECASE)
# Care a recommendation asks for without 'Offer': "A wound care team should see all patients ...",
# "Provide patients with lymphoedema with at least two suitable compression garments".
_ASKS_FOR_RE = re.compile(r"^(?:an?|the)\s+(?P<who>.+?)\s+should\s+(?:assess|see)\b"
                          r"|^provide\s+(?:patients\s+with\s+\w+\s+with\s+)?(?P<what>.+?)(?=[:.,;]|$)", re.IGNORECASE)
# Progression on the treatment just discussed, named by a pronoun ("if she progresses on it").
_ON_IT_RE = re.compile(r"\b(?:progress\w*|pd|relapse[sd]?|fail(?:s|ed|ing)?)\s+(?:on|through|despite)\s+"
                       r"(?:it|that|this|them|those|these)\b", re.IGNORECASE)
# Where a scan's findings end: the end of its sentence, or a clause adding something else ("also ...").
_FINDING_END = re.compile(r"[.;!?]|\b(?:also|but|and she|and has)\b", re.IGNORECASE)
# What a recommendation is for, not whom: "... to prevent skeletal-related events and reduce pain". A patient
# without pain still gets bisphosphonates; the clause is an aim, so ruling it out does not count against it.
_AIM_RE = re.compile(r"\b(?:to|and|in order to)\s+(?:prevent|reduce|relieve|improve)\b[^.;]*", re.IGNORECASE)
ROLES = ("problem", "intervention", "aspect")
# Patient facts that change with time (treatment had, line reached), not which patient she is.
_TIME_FACTS = {"prior_therapies", "line_of_therapy"}
# Concept weights of one turn's search: the message's own question counts fully; its description of the
# patient and what a follow-up carries over from the topic count less; patient facts are not topics.
DESCRIBED_WEIGHT = 0.5
CARRIED_WEIGHT = 0.6
PROFILE_WEIGHT = 0.3
NEGATED_FACTOR = 0.8
TIE_MARGIN = 0.01         # fused scores this close are a tie, which a pronoun resolves to the answer just given
CONFLICT_SHOWN = 0.35     # closest recommendations named when none fits the patient (relative to MIN_ANSWER)


@dataclass
class Reply:
    kind: str                 # answer | abstain | clarify | lookup | list | reset | invalid
    text: str
    payload: dict | None
    state: dict
    buttons: list = field(default_factory=list)
    query: str = ""           # what was searched (for explanation and debugging)
    trace: dict = field(default_factory=dict)  # weights, carried topic and scored candidates


def _mark_done(fit: dict, done: set) -> dict:
    """The applicability with these recommendations marked as done for the patient (ranked lower)."""
    return {rid: dataclasses.replace(f, done=True) if rid in done else f for rid, f in fit.items()}


def _last_answer(state: dict) -> str | None:
    """The recommendation the last answer led with, if any: what "that" and "after that" refer to."""
    return (state.get("last_answer_ids") or [None])[0]


def clean(message) -> str:
    """Drop control and format characters and fold whitespace; what is left is what we search."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    text = unicodedata.normalize("NFKC", str(message))
    return " ".join(_CONTROL.sub(" ", text).split())


def provenance(meta: dict) -> dict:
    """Where answers come from: the corpus hash, the index (hash of its build record) and the model."""
    model = meta.get("model") or {}
    name = model.get("name", "?") + (f"@{model['weights_sha256'][:12]}" if model.get("weights_sha256") else "")
    return {"corpus_sha256": meta.get("corpus_sha256"), "index": sha256_text(json.dumps(meta, sort_keys=True))[:12],
            "model": name}


CLARIFY_CONTENDER = 0.5   # share of the best score a candidate needs to make a clarification worth asking


def _named_concepts(data: dict) -> set:
    """Every concept id the dialogue rules refer to."""
    prof = data["profile"]
    names = {c for spec in prof["attributes"].values() for c in spec["concepts"]}
    names |= {c for pair in prof["exclusive"] for c in pair}
    names |= {c for cs in prof["applicability_groups"].values() for c in cs}
    for key in ("history_of", "no_history_of", "progressed_on"):
        names |= {c for k, v in prof.get(key, {}).items() for c in (k, v)}
    for fact, treatments in prof.get("unsuitable_for", {}).items():
        names |= {fact, *([treatments] if isinstance(treatments, str) else treatments)}
    for key in ("one_off_treatments", "care_given", "defaults", "early_disease_history"):
        names |= set(prof.get(key, []))
    names |= set(data.get("oos_as_history", [])) | set(data.get("oos_in_description", [])) | set(
        data.get("oos_in_case", [])) | set(data.get("advanced_disease", []))
    names |= {c for group in data.get("oos_answered_with", []) for c in group}
    names |= {c for k, v in data.get("rules_out", {}).items() for c in (k, *v)}
    names |= {c for k, v in data.get("answered_only_with", {}).items() for c in (k, v["out_of_scope"], *v["with"])}
    names |= set(data["roles"].get("overrides", {})) | set(data["roles"].get("about_current_treatment", [])) | \
        set(data["roles"].get("about_what_precedes", []))
    names |= {c for clar in data["clarifications"] for o in clar["options"] for c in o["concepts"]}
    names |= set(data.get("asks_before", [])) | {c for cs in data.get("branch_offers", {}).values() for c in cs}
    return names


class DialogueRules:
    """The dialogue YAML: profile attributes, concept roles, phrasing patterns and clarifications."""

    def __init__(self, data: dict, lexicon) -> None:
        unknown = sorted(_named_concepts(data) - set(lexicon.concepts))
        if unknown:
            # A misspelt concept id would otherwise never match anything, silently.
            raise ValueError(f"dialogue rules name concepts the lexicon does not have: {unknown}")
        self.profile = ProfileRules(data["profile"], lexicon)
        self.roles = data["roles"]
        self.reset_patterns = data["reset_patterns"]
        self.ellipsis_start = data["ellipsis_start"]
        self.anaphora = data["anaphora"]
        self.points_back = data.get("points_back")
        # Optional phrasing patterns, read by the Analyzer into the Query (parse once).
        self.phrasing = {k: data[k] for k in ("refers_back", "amends", "corrects", "acknowledgement", "other_branch",
                                              "shifts_topic", "repeats") if data.get(k)}
        self.sequel = data.get("sequel")
        self.services_in_care = data.get("services_in_care")
        self.oos_as_history = data.get("oos_as_history", [])
        self.oos_in_case = frozenset(data.get("oos_in_case", []))
        self.advanced_disease = frozenset(data.get("advanced_disease", []))
        self.rules_out = data.get("rules_out", {})
        self.oos_in_description = frozenset(data.get("oos_in_description", []))
        self.oos_answered_with = [(c, frozenset(others)) for c, *others in data.get("oos_answered_with", [])]
        self.answered_only_with = {c: (v["out_of_scope"], frozenset(v["with"]))
                                   for c, v in data.get("answered_only_with", {}).items()}
        self.update = data["update"]
        self.choice_question = re.compile(data["choice_question"], re.IGNORECASE)
        self.clarifications = data["clarifications"]
        # Branches of one decision, each written for other patients: the data's own, and each clarification's
        # options (their recommendations answer the same question for different patients).
        self.decisions = [tuple(d) for d in data.get("decisions", [])]
        self.branch_offers = {rid: frozenset(cs) for rid, cs in data.get("branch_offers", {}).items()}
        branches = [list(d) for d in self.decisions] + [
            [i for o in c["options"] for i in o["recommendations"]] for c in self.clarifications]
        self.follows = data.get("follows", {})
        self.on_progression = data.get("on_progression", {})
        self.before = data.get("before", {})
        self.asks_before = frozenset(data.get("asks_before", []))
        # The patient facts that select an option's recommendations (very poor prognosis -> 1.5.21).
        self.selected_by: dict = {}
        for c in self.clarifications:
            for o in c["options"]:
                for i in o["recommendations"]:
                    self.selected_by.setdefault(i, set()).update(o.get("concepts", []))
        self.branches: dict = {}
        for group in branches:
            for rid in group:
                self.branches.setdefault(rid, [])
                self.branches[rid] += [i for i in group if i != rid and i not in self.branches[rid]]

    @classmethod
    def load(cls, lexicon=None, path=None) -> DialogueRules:
        from assistant.lexicon import Lexicon

        schema = config.CORPUS_DIR / "terminology" / "dialogue.schema.json"
        return cls(load_yaml_validated(path or config.DIALOGUE_RULES_PATH, schema), lexicon or Lexicon.load())


class Assistant:
    """One turn in, one reply out: answer, clarify, look up, list, or abstain."""

    def __init__(self, retriever, rules: DialogueRules | None = None, mode: str = "hybrid",
                 abstain: bool = True) -> None:
        self.retriever = retriever
        self.mode = mode          # "bm25" / "dense" only for the baselines in the evaluation
        self.abstain = abstain
        self.extractor = retriever.extractor
        self.rules = rules or DialogueRules.load(self.extractor.lexicon)
        self.analyzer = Analyzer(self.extractor, self.rules)
        prof = self.rules.profile
        self.conditions = {r["id"]: prof.conditions(c, n, self._offered(r)) for r, c, n in
                           zip(retriever.records, retriever.record_concepts, retriever.record_negated)}
        self.years = sorted({r["year"] for r in retriever.records})
        # The lines of treatment in order (first, second, third): what follows one line is the next.
        self.lines = list(prof.attributes.get("line_of_therapy", {}).get("concepts", []))
        self.provenance = provenance(retriever.meta)
        self.heading_concepts = {c for d in retriever.doc_concepts for c, w in d.items() if w == 1.0}
        self.aims = {r["id"]: self._aims(r["text"]) for r in retriever.records}
        # The scans an assessment recommendation asks for by name ("Assess proximal limb bones ... using bone
        # scintigraphy and/or plain radiography"), the generic "imaging" aside: done once a message reports
        # what they showed.
        lex = self.extractor.lexicon
        imaging = {c for c, concept in lex.concepts.items() if concept.label == "IMAGING"}
        generic = {b for c in imaging for b in lex.closure([c], infer=False) - {c}}
        self.scans = {r["id"]: frozenset(named & imaging - generic)
                      for r, named in zip(retriever.records, retriever.record_concepts) if r["strength"] == "other"}
        steps = {i for m in (self.rules.follows, self.rules.on_progression, self.rules.before)
                 for k, v in m.items() for i in (k, *v)} | set(self.rules.branches)
        unknown = sorted(steps - set(retriever.by_id))
        if unknown:
            # A misspelt recommendation id in the dialogue rules would otherwise fail mid-conversation.
            raise ValueError(f"dialogue rules name recommendations the corpus lacks: {unknown}")

    # ------------------------------------------------------------------ turn
    def respond(self, message, state: dict | None = None, intent: str | None = None) -> Reply:
        """One turn. Every payload names what the answer came from (corpus, index, model) for the audit."""
        reply = self._respond(message, state, intent)
        if reply.payload is not None:
            reply.payload["provenance"] = self.provenance
        return reply

    def _respond(self, message, state: dict | None, intent: str | None) -> Reply:
        state = {s: (state or {}).get(s) for s in SLOTS}
        raw_len = len(message) if isinstance(message, (str, bytes)) else 0
        text = clean(message) if message is not None else ""
        if not text:
            return Reply("invalid", answer.EMPTY_MESSAGE, None, state)
        if raw_len > config.MAX_QUESTION_CHARS:
            return Reply("invalid", answer.too_long(config.MAX_QUESTION_CHARS), None, state)

        q = self.analyzer.analyse(text)
        base = state
        if q.reset:
            base = {s: None for s in SLOTS}
            if not q.concepts and not q.rec_ids and q.words <= 8:
                return Reply("reset", answer.RESET_TEXT, None, base)
        if q.rec_ids:
            return self.lookup(list(q.rec_ids), base, update=q.update)
        update = q.update or bool(q.years and (base.get("topic") or {}).get("kind") == "update")
        last = base.get("last_answer_ids") or []
        if (update and q.refers_back and last and not self._scored_topic(q)
                and (base.get("topic") or {}).get("kind") != "update"):
            # "is that a new rec?", "is that one of the 2014 updates?" about the answer just given: that
            # recommendation, with its year.
            return self.lookup(last[:1], base, update=True)
        if update:
            reply = self._update_list(q, base)
            if reply is not None:
                return reply
        listing = self._list_request(q, intent, base)
        if listing is not None:
            return listing
        return self._answer(q, base, intent, years=update)

    def _answer(self, q: Query, state: dict, intent: str | None, years: bool = False) -> Reply:
        topic = state.get("topic") or {}
        profile, followup, carried = self._context(q, state, intent)
        if followup and not q.asks and q.oos and set(q.oos) <= self.rules.oos_in_description:
            # A statement that goes on about the patient ("jaundiced, needs a fast response, happy to accept the
            # side effects") describes her: what it names is not asked about.
            q = dataclasses.replace(q, oos=())
        # What the message names, and what it carried over from the topic, as if it had named it.
        context = set(q.concepts) | self.extractor.lexicon.closure(c for v in carried.values() for c in v)
        if followup and q.oos:
            # "what dose?" after "single fraction RT for painful bone mets?": the topic carried over is what
            # the guideline answers it with (1.5.16's 8 Gy). Early disease in her past is history in a
            # conversation about her ("had axillary clearance so at risk").
            q = dataclasses.replace(q, oos=tuple(c for c in self.analyzer.unanswered(q.oos, context)
                                                 if c not in q.past_oos))
        outside = self.analyzer.answered_elsewhere(q, context)
        if outside:
            # "WBRT - what fractionation?": a dose the guideline gives only for bone metastases.
            q = dataclasses.replace(q, oos=q.oos + outside)
        research = q.research or ("research" in carried.get("aspect", []) and not q.role_set("aspect"))
        # Which recommendations apply to this patient: once per turn, used by ranking, abstention and display.
        patient = self.rules.profile.closure(profile)
        fit = {rid: self.rules.profile.applicability(cond, patient) for rid, cond in self.conditions.items()}
        research = research or self._history_only_researched(q, carried, fit, patient)
        reported, asked_scans = self._scans_reported(q)
        if reported:
            # "x-ray shows a lytic lesion in the femoral neck": the assessment with that scan is done, what
            # follows it is asked (1.5.17 rather than 1.1.3). Ranked lower, not ruled out; an assessment with a
            # scan the message asks for ("bone scan shows spinal mets; x-rays of her femurs too?") stays.
            # Nor one about a site the findings are not from: "bone scan shows spine and pelvis mets; anything
            # for her long bones?" still asks for 1.1.3's assessment of the limb bones.
            elsewhere = self._sites_asked_not_reported(q)
            fit = _mark_done(fit, {rid for rid, scans in self.scans.items() if scans & reported
                                   and not scans & asked_scans and not elsewhere & self.retriever.named_in(rid)})
        involved = q.negated & self.rules.profile.care_given
        if involved and "care_team" in q.role_set("aspect"):
            # "Who else should be involved, apart from the wound team?": that team is her care already.
            fit = _mark_done(fit, {rid for rid in fit if self._offers(rid) & involved})
        if research:
            # Research asked about ("any trials on what to do once they progress on it?") looks ahead: a
            # treatment history the patient does not have yet is still to come, not a reason it is not hers.
            pre = self.rules.profile.preconditions
            fit = {rid: dataclasses.replace(f, conflicting=(), open=f.open + f.conflicting)
                   if self.retriever.by_id[rid]["kind"] == "research" and f.conflicting and set(f.conflicting) <= pre
                   else f for rid, f in fit.items()}
        request = self._request(q, carried, fit, research)
        result = self.retriever.search(request, k=8, mode=self.mode, abstain=self.abstain)
        # What would have answered had her facts not ruled it out: for a branch that fits her, or to say so.
        unfit = [] if q.oos else self._unfit_for_patient(result, request, fit)
        branch = (self._other_branch(q, state, followup, fit) or self._branches_weighed(q, carried, fit, result)
                  or self._next_step(q, state, followup, fit, result)
                  or self._step_before(q, fit, result) or self._branch_for_patient(unfit, result, fit, patient))
        if branch:
            # The decision just answered, for the patient as she now is: not a new search's best guess.
            result = dataclasses.replace(result, candidates=self._promote(result.candidates, branch),
                                         abstained=False, reason=None)
        trace = {"weights": request.weights, "carried": carried, "followup": followup,
                 "dense_text": request.dense_text,
                 "candidates": [(c.id, c.score, c.dense, c.bm25, c.concept, request.factors.get(c.id, 1.0))
                                for c in result.candidates]}
        if research and self.abstain and not q.oos and result.candidates and \
                self._research_off_topic(result, q, carried):
            # Checked before the score threshold: the research recommendations on other topics score low
            # too, and "none on this topic" is the truthful answer, not "nothing found".
            reason = "no_research_on_topic"
            return Reply("abstain", answer.abstention_text(reason), answer.abstention_payload(reason), state,
                         query=request.text, trace=trace)
        if (q.oos and self.abstain) or result.abstained:
            reason = "out_of_scope:" + ",".join(q.oos) if q.oos else result.reason
            unfit = unfit if reason == "low_score" else []
            if unfit:
                # The question is answered in CG81, but only for other patients: say that, not "no answer".
                return self._not_for_patient(unfit, q, carried, fit, {**state, **profile}, request, trace)
            # Nothing answered, but patient facts stated in scope are kept for the next question; so is what a
            # description of the patient is about ("new arm swelling, looks like lymphoedema" -> "anything to
            # check before we treat it?").
            kept = state if q.oos or q.leading_ellipsis else {**state, **profile}
            names_topic = bool(q.role_set("problem") | q.role_set("intervention"))
            if not q.oos and not q.asks and reason == "low_score" and names_topic:
                kept = {**kept, "topic": self._new_topic(q, state.get("topic") or {}, followup, carried)[1] or None}
            return Reply("abstain", answer.abstention_text(reason), answer.abstention_payload(reason), kept,
                         query=request.text, trace=trace)
        # Asked which agent or option ("which endocrine therapy?"): kept for the follow-ups that refine it.
        choice, new_topic = self._new_topic(q, topic, followup, carried)
        new_state = {**state, **profile, "topic": new_topic or None, "pending_clarification": None}
        ranked = list(result.candidates) if branch else self._resolve_tie(list(result.candidates), q, state, followup)
        # The general recommendation leads for a patient whose group is known only when the question weighs
        # chemotherapy against endocrine therapy ("chemo or hormones first?"); "first line for a man?" is
        # answered by his group's own recommendation.
        versus = "chemotherapy" in self.extractor.lexicon.closure(new_topic.get("intervention") or [])
        rule, ranked = self._clarify_or_rerank(ranked, patient, fit, choice or not versus)
        if years:
            # "The surgery then WBRT one - what year?" asks when recommendations date from, whoever the patient.
            rule = None
        if self.abstain and not rule and ranked and fit[ranked[0].id].conflicting:
            # Every recommendation that fits the question is written for another patient group or history
            # (an aromatase inhibitor after progression on one): say so rather than quote it as the answer.
            closest = [c.id for c in ranked[:3] if c.score >= self._min_score() * CONFLICT_SHOWN]
            # The patient's facts and the topic stay: the next message usually goes on about this patient.
            return self._not_for_patient(closest or [ranked[0].id], q, carried, fit,
                                         {**new_state, "last_answer_ids": None}, request, trace)
        notes = self._notes(q, ranked[:1])
        if years:
            tags = self.retriever.updates.get("tags", {})
            notes += [answer.year_note(c.id, self.retriever.by_id[c.id]["year"], tags) for c in ranked[:1]]
        if rule:
            # Candidates: best fit to the described patient first; then the general recommendation (1.3.1
            # holds whatever the answer) before the ones that differ by the answer, unless the question asks
            # which agent to choose. Nothing written for a patient group already ruled out.
            options = self._open_options(rule, patient)
            general = rule.get("general", [])
            top_ids = [c.id for c in ranked[: rule.get("top_k", 4)]]
            allowed = {i for o in options for i in o["recommendations"]} | {i for i in general if i in top_ids}
            ids = [c.id for c in ranked if c.id in rule["trigger_top"] and c.id in allowed
                   and not fit[c.id].conflicting]
            order = {i: n for n, i in enumerate(ids)}
            ids.sort(key=lambda i: (-len(fit[i].matched), (i in general) == choice, order[i]))
            scores = {c.id: c.score for c in ranked}
            question = rule["question"] if len(options) == len(rule["options"]) else \
                "The recommendation depends on the patient: " + " or ".join(o["label"].lower() for o in options) + "?"
            clar = {"question": question, "options": [o["label"] for o in options]}
            new_state.update(pending_clarification=rule["id"], last_answer_ids=ids)
            answers = [answer.answer_item(self.retriever.by_id[i], scores.get(i)) for i in ids]
            return Reply("clarify", answer.clarification_text(clar, answers),
                         answer.payload(answers, clarification=clar, notes=notes), new_state,
                         buttons=[{"title": o, "payload": o} for o in clar["options"]], query=request.text,
                         trace=trace)
        conflicting = {c.id for c in ranked if fit[c.id].conflicting}
        shown = [ranked[0]] + [c for c in ranked[1:3] if c.score >= self._min_score() and c.id not in conflicting]
        answers = [answer.answer_item(self.retriever.by_id[c.id], c.score) for c in shown]
        new_state["last_answer_ids"] = [a["id"] for a in answers]
        return Reply("answer", answer.answer_text(answers, notes=notes), answer.payload(answers, notes=notes),
                     new_state, query=request.text, trace=trace)

    # ------------------------------------------------------------------ follow-ups
    def _continues(self, q: Query, state: dict, intent: str | None, history: set) -> bool:
        """Does this message lean on the conversation (ellipsis, pronoun, refinement, clarification
        answer), rather than start afresh or be noise? `history`: the treatments the patient has had."""
        if q.reset or q.shifts_topic:
            return False
        if not q.concepts and not _QUESTION_WORDS.search(q.text):
            return False  # noise is never read as a follow-up, whatever the classifier said
        if not q.concepts and q.acknowledges:
            return False  # "brill, thanks, that's really helpful" asks nothing more
        own = q.role_set("problem") | q.role_set("intervention")
        if state.get("pending_clarification") or intent in FOLLOWUP_INTENTS or q.elliptical:
            return True
        topic = state.get("topic") or {}
        if not q.asks and self._compatible(own, set(topic.get("problem") or []) | set(topic.get("intervention") or [])
                                           | history):
            # A statement after a question tells more about the patient ("context: CT shows a lung nodule"),
            # unless it turns to something no recommendation shares with the topic; so does a statement
            # after a description of the treatment she is on ("on trastuzumab" -> "new liver mets").
            return bool(topic or history)
        # A message that only describes the patient or asks an aspect ("who?", "what support?") refines
        # the current topic; one that names its own problem and intervention is a question of its own.
        return not (q.role_set("problem") and q.role_set("intervention")) or not own

    def _other_branch(self, q: Query, state: dict, followup: bool, fit: dict) -> list:
        """A follow-up that only tells more about the patient ("mets are small, she's asymptomatic"; "what if
        she's too frail for even that?") and so rules out the recommendation just given: the other branches
        of the same decision that fit her, best fit first; or any other branch when asked for ("when would you go
        the other way?"). Empty when it asks about something of its own."""
        last = _last_answer(state)
        if not (followup and last) or q.oos:
            return []
        # Sites she is known to have are described, not asked about ("the lung nodules are small").
        sites = self.extractor.lexicon.closure(set(state.get("metastatic_sites") or []))
        # So is a treatment a statement mentions ("though she's still PS 1 and starting chemo").
        named = q.role_set("problem") | (q.role_set("intervention") if q.asks else set())
        if {c for c in named if not self.analyzer.is_profile_concept(c) and c not in sites}:
            return []
        fitting = [i for i in self.rules.branches.get(last, []) if not fit[i].conflicting]
        if q.other_branch:
            # "When would you go the other way?": the other branch, whatever the patient is known to be.
            return fitting[:1]
        if not (q.facts and fit.get(last) and fit[last].conflicting):
            return []
        if q.sequel or set(q.facts) & _TIME_FACTS:
            return []  # treatment since ("she's completed the chemo") moves the patient on: see _next_step
        return sorted(fitting, key=lambda i: -len(fit[i].matched))[:1]

    def _branches_weighed(self, q: Query, carried: dict, fit: dict, result) -> list:
        """A question weighing the branches of one decision against each other by what each offers ("hormones
        or chemo first?", "goserelin + tam or chemo?"), or one branch when her facts select another: that
        decision answers it, the branch her facts select first (first-line chemotherapy when her disease is
        imminently life-threatening), then the one this message names ("happy to go through drugs one at a
        time"), else the better match to the question. A follow-up about her goes on weighing them ("she needs
        a quick response"). Not once her treatment history has taken her past the decision."""
        if q.oos:
            return []
        weighed = set(q.asked) | self.extractor.lexicon.closure(carried.get("intervention", []))
        top = {c.id for c in result.candidates[:3]}
        for decision in self.rules.decisions:
            offers = {i: self._offers(i) | self.rules.branch_offers.get(i, frozenset()) for i in decision}
            named = [i for i in decision if offers[i] & weighed]
            # Both treatments named in a question about something else ("help her choose between endocrine
            # therapy and chemotherapy": decision aids) do not make the decision the answer. One branch named
            # ("is endocrine therapy still the right first step for her?") weighs it against the branch her
            # facts select (her liver failing: 1.3.2), if any does.
            if not named or not top & set(decision):
                continue
            if len(named) < len(decision) and not any(
                    len(fit[i].matched) > max(len(fit[n].matched) for n in named) and not fit[i].conflicting
                    for i in decision if i not in named):
                continue
            if any(set(fit[i].conflicting) & ({"treatment_history"} | self.rules.profile.preconditions)
                   for i in decision):
                return []
            rank = {c.id: n for n, c in enumerate(result.candidates)}
            fitting = [i for i in decision if not fit[i].conflicting]
            # A branch whose offer the message sets aside ("she's 81, not looking for maximum response") last.
            return sorted(fitting, key=lambda i: (bool(offers[i] & q.negated), -len(fit[i].matched),
                                                  not offers[i] & q.asked, rank.get(i, len(rank))))
        return []

    @staticmethod
    def _resolve_tie(ranked: list, q: Query, state: dict, followup: bool) -> list:
        """A follow-up that points back ("do we need to revisit that later on?") means what was just answered:
        among candidates tied at the top, the ones shown last time come first."""
        shown = state.get("last_answer_ids") or []
        # Not an ellipsis naming something of its own: "and for bones?" asks about something else.
        if not (followup and shown and ranked and (q.refers_back or (q.elliptical and not q.roles))):
            return ranked
        tied = [c for c in ranked if c.score >= ranked[0].score - TIE_MARGIN]
        tied.sort(key=lambda c: c.id not in shown)
        return tied + ranked[len(tied):]

    def _branch_for_patient(self, unfit: list, result, fit: dict, patient) -> list:
        """The question names a branch of a decision that the patient's facts rule out ("PS4, very poor
        prognosis, any point in WBRT?"): the branch of that decision written for patients like her, rather
        than "not for this patient". Only a branch her facts select (not one that merely does not conflict),
        and not when the branch asked about is behind her (treatment had: see _next_step). `unfit`: what
        _unfit_for_patient found (nothing for an out-of-scope question)."""
        if not unfit or "treatment_history" in fit[unfit[0]].conflicting or fit[unfit[0]].done:
            return []
        rank = {c.id: n for n, c in enumerate(result.candidates)}
        selects = {i: len(fit[i].matched) + len(self.rules.selected_by.get(i, set()) & patient)
                   for i in self.rules.branches.get(unfit[0], []) if not fit[i].conflicting}
        return sorted((i for i, n in selects.items() if n), key=lambda i: (-selects[i], rank.get(i, len(rank))))[:1]

    def _offers(self, rec_id: str | None) -> frozenset:
        """The treatments a recommendation offers (read from its text: see `_offered`)."""
        return self.conditions.get(rec_id, {}).get("offers") or frozenset()

    def _last_offered(self, state: dict) -> frozenset:
        """The treatments the last answer offered: what "after that" and "progresses on that" are about."""
        return self._offers(_last_answer(state))

    def _next_step(self, q: Query, state: dict, followup: bool, fit: dict, result) -> list:
        """What the guideline says comes after a step already taken, if it fits her: after the last answer
        ("and after that?"), or after the step this message says is done ("we've established she wants the
        full picture" settles the assessment of her preference, 1.2.1: what follows is 1.2.2)."""
        if not followup or q.oos:
            return []
        last = _last_answer(state)
        done = None
        if last and self._sequel(q) and (not q.sequel_of or q.sequel_of <= self.extractor.lexicon.closure(
                self._last_offered(state))):
            done = last     # "and after that?", "once the chemo's done?" about the chemotherapy just offered
        elif last and q.sequel and q.role_set("intervention") & {
                t for i in self.rules.follows.get(last, []) for t in self._offers(i)}:
            done = last     # "should she get rehab after?" names what the guideline says follows it
        elif q.ruled_out:
            done = next((c.id for c in result.candidates[:3]
                         if c.id in self.rules.follows and q.ruled_out & self.retriever.named_in(c.id)), None)
        elif last and self._progresses(q):
            # "and when she progresses?" after combination chemotherapy: what the guideline offers on progression.
            return [i for i in self.rules.on_progression.get(last, []) if not fit[i].conflicting][:1]
        return [i for i in self.rules.follows.get(done, []) if not fit[i].conflicting][:1]

    def _step_before(self, q: Query, fit: dict, result) -> list:
        """What the guideline says to do before the step that best answers a message asking what comes first
        ("arm lymphoedema, we are planning CDT - anything to do first?": the assessment for treatable factors)."""
        if q.oos or not result.candidates or not q.role_set("aspect") & self.rules.asks_before:
            return []
        step = result.candidates[0].id
        # The step itself is named ("before CDT"); "what's the first step for lymphoedema?" asks for it.
        if not self._offers(step) & set(q.concepts):
            return []
        return [i for i in self.rules.before.get(step, []) if not fit[i].conflicting][:1]

    @staticmethod
    def _scans_reported(q: Query) -> tuple:
        """(the scans whose findings the message reports, the scans it asks about: "US and MRI inconclusive.
        next imaging?"). None reported if it says some imaging is still to do ("no limb imaging done yet")."""
        scans = [e for e in q.entities if e.label == "IMAGING"]
        if any(e.negated for e in scans):
            return frozenset(), frozenset()
        return (frozenset(e.value for e in scans if e.historical),
                frozenset(e.value for e in scans if not e.historical))

    def _sites_asked_not_reported(self, q: Query) -> set:
        """The metastatic sites the message asks about when the findings of the scans it reports are from other
        sites. A finding is a site named after a scan in its own sentence ("isotope scan shows mets spine +
        pelvis, also aching R thigh": the thigh is a symptom, not a finding)."""
        start = q.question_start
        if start <= 0:
            return set()
        sites = [e for e in q.entities if e.label == "MET_SITE" and not e.negated]
        spans = [(e.start, e.start + _FINDING_END.search(q.text[e.start:start] + ".").start())
                 for e in q.entities if e.label == "IMAGING" and e.historical and e.start < start]
        asked = {e.value for e in sites if e.start >= start}
        reported = self.extractor.lexicon.closure(e.value for e in sites if any(a <= e.start < b for a, b in spans))
        return asked if reported and not reported & asked else set()

    @staticmethod
    def _progresses(q: Query) -> bool:
        """Asks what to do on progression without naming a problem or a treatment of its own ("what if she
        progresses?"), or names by a pronoun what she progresses on ("if she progresses on it, which endocrine
        therapy next?"): progression on the treatment just discussed."""
        return "progression" in q.role_set("event") and (bool(_ON_IT_RE.search(q.text)) or not (
            q.role_set("problem") | q.role_set("intervention") | set(q.facts.get("prior_therapies") or [])))

    def _history(self, state: dict) -> set:
        """The treatments the patient has had ("progressed on trastuzumab" is a history of trastuzumab)."""
        had = self.extractor.lexicon.closure(state.get("prior_therapies") or [], infer=False)
        return {self.rules.profile.history_treatment[p] for p in had if p in self.rules.profile.history_treatment}

    def _context(self, q: Query, state: dict, intent: str | None) -> tuple:
        """(profile, followup, carried): the patient after this message, whether it goes on with the
        conversation, and what it takes from the topic."""
        facts = {k: v for k, v in q.facts.items() if not k.startswith("_")}
        topic = state.get("topic") or {}
        sites = set(state.get("metastatic_sites") or [])
        # Treatments the patient has had stand in for a topic nobody has asked about yet ("had docetaxel
        # then capecitabine" -> "3rd line?").
        history = self._history(state)
        followup = bool(topic or sites or history) and self._continues(q, state, intent, history)
        next_line = None
        lines = self.lines
        if followup and self._sequel(q):
            # "anything to follow on with?" after chemotherapy: the patient has had it. The treatment is the
            # topic's, or else the operation or radiotherapy the last answer offered ("and after that?").
            offered = self._last_offered(state)
            treatments = q.sequel_of or topic.get("intervention") or (
                offered if offered <= self.rules.profile.one_off else []) or history
            had = self.rules.profile.history_facts(treatments)
            if had:
                facts["prior_therapies"] = sorted(set(facts.get("prior_therapies") or []) | had)
            # What follows a line of treatment is the next line ("docetaxel first line ... and after that?").
            # The patient's line stays what it was (a record for "treated with chemotherapy as first-line
            # treatment" still fits); the line asked about moves on.
            line = facts.get("line_of_therapy") or state.get("line_of_therapy")
            if treatments and line in lines[:-1]:
                next_line = lines[lines.index(line) + 1]
        elif followup and self._progresses(q):
            # "what if she progresses on that?": on the treatment the last answer offered.
            offered = self._last_offered(state)
            progressed = sorted(p for p, t in self.rules.profile.progressed_on.items() if t in offered)
            if progressed:
                facts["prior_therapies"] = progressed
        if followup and q.refers_back and not q.role_set("intervention") and \
                set(facts.get("prior_therapies") or []) & self.rules.profile.early_disease:
            # "What about pts who already had it as adjuvant?": the treatment discussed, given for early disease.
            had = self.rules.profile.history_facts(topic.get("intervention") or [])
            if had:
                facts["prior_therapies"] = sorted(set(facts["prior_therapies"]) | had)
        profile = self.rules.profile.merge(state, facts)
        carried = self._carried(q, topic, sites, history) if followup else {}
        if next_line and carried.get("aspect"):
            carried["aspect"] = sorted({next_line if c in lines else c for c in carried["aspect"]})
        return profile, followup, carried

    def _new_topic(self, q: Query, topic: dict, followup: bool, carried: dict) -> tuple:
        """(choice, topic after this message): its own roles with what it carried over."""
        same_topic = followup and not (q.role_set("problem") | q.role_set("intervention"))
        choice = bool(self.rules.choice_question.search(q.question)) or (same_topic and bool(topic.get("choice")))
        new_topic = {r: sorted(q.role_set(r) | set(carried.get(r, []))) for r in ROLES}
        if q.sites_as_context:
            # Sites in a description of the patient are profile facts, not the problem asked about.
            new_topic["problem"] = [c for c in new_topic["problem"]
                                    if self.rules.profile.attribute_of.get(c) != "metastatic_sites"]
        if not any(new_topic.values()):
            new_topic = {r: list(topic.get(r) or []) for r in ROLES} if followup else {}
        new_topic = {k: v for k, v in new_topic.items() if v}
        if new_topic and choice:
            new_topic["choice"] = True
        # The scans whose findings were reported, for a follow-up asking to do one again.
        scans = sorted(self._scans_reported(q)[0]) or (list(topic.get("scans") or []) if followup else [])
        if new_topic and scans:
            new_topic["scans"] = scans
        return choice, new_topic

    def encoder_text(self, turns: list) -> str:
        """What the encoder sees for the last of these turns, with the state the earlier ones leave
        (patient and topic; not what was answered, which needs a search). The fine-tuning trains on it."""
        state: dict = {s: None for s in SLOTS}
        q = None
        for turn in turns:
            q = self.analyzer.analyse(clean(turn))
            topic = state.get("topic") or {}
            profile, followup, carried = self._context(q, state, None)
            _, new_topic = self._new_topic(q, topic, followup, carried)
            state = {**state, **profile, "topic": new_topic or None}
        return q.encoder_text(self.extractor.lexicon, (c for v in carried.values() for c in v))

    @staticmethod
    def _sequel(q: Query) -> bool:
        """Asks what follows the treatment discussed, without naming a treatment of its own ("should she
        have radiotherapy after the op?" asks about radiotherapy)."""
        return q.sequel and not q.role_set("intervention") - q.sequel_of

    def _compatible(self, a: set, b: set) -> bool:
        """Some recommendation is about both (imaging and the liver: yes; endocrine therapy and
        fatigue: no), so keeping one with the other makes sense."""
        if not a or not b:
            return True
        return any(set(d) & a and set(d) & b for d in self.retriever.doc_concepts)

    def _carried(self, q: Query, topic: dict, sites: set, history: set = frozenset()) -> dict:
        """The roles of the topic that this message leaves out, and that fit with what it says. Where the
        topic names no problem, the patient's metastatic sites stand in for it ("newly diagnosed bone
        mets in a 60F, ER+" -> "should she have bisphosphonates?")."""
        own = {r: q.role_set(r) for r in ROLES}
        old = {r: set(topic.get(r) or []) for r in ROLES}
        if not old["problem"] and not old["intervention"]:
            # ...and the problem those treatments are for ("has done her decongestive therapy" -> lymphoedema).
            # Not for a line of treatment asked ("what should first line be?"): that asks for the systemic
            # treatment of the whole disease, which her sites select among, not a treatment of the sites.
            old["problem"] = (set() if own["aspect"] & set(self.lines) and not history else set(sites)) | {
                c for c in self.extractor.lexicon.closure(history) if self.analyzer.role(c) == "problem"}
            old["intervention"] = set(history)
        elif not old["problem"] and own["intervention"]:
            old["problem"] = set(sites)
        if not q.asks and any(old.values()):
            # A statement in the middle of a conversation ("she's PS 4 with progressive liver disease,
            # prognosis weeks") tells more about the patient: the question stays the one being discussed --
            # about the problem it names instead, if it corrects the earlier one ("actually it's her spine").
            if own["problem"] and q.corrects:
                old["problem"] = set()
            return {r: sorted(v) for r, v in old.items() if v}
        carried: dict = {}
        had: set = set()
        if self._sequel(q):
            # What follows the treatment discussed: that treatment is history now (see _answer), not the topic;
            # it is still searched, as the history some recommendations start from ("treated with
            # chemotherapy as their first-line treatment").
            had = self.rules.profile.history_facts(old["intervention"])
            old["intervention"] = set()
        if not own["problem"] and not own["intervention"]:
            # An aspect that is a subject of its own in the guideline (a heading: supportive care, information)
            # keeps only a topic some recommendation shares with it: "who's her key worker?" drops the AI;
            # "which agent?", "who should see her about it?" qualify the topic and keep it.
            standalone = (own["aspect"] & self.heading_concepts) - {"research"}
            if not standalone or self._compatible(standalone, old["problem"] | old["intervention"]):
                carried = {"problem": old["problem"], "intervention": old["intervention"]}
        elif not own["problem"]:
            # A treatment that goes with the problem, or one asked about it by a pronoun ("who decides whether RT
            # or surgery could control it?"), keeps the problem.
            if q.refers_back or self._compatible(own["intervention"], old["problem"]):
                carried["problem"] = old["problem"]
        elif not own["intervention"] and q.elliptical:
            # What the message adds ("and if the bone's at risk of breaking?" adds the fracture, not the bone
            # metastases already discussed) must go with the intervention for it to be kept.
            # A site named beside the new problem ("the bone's at risk of breaking") is where it is, not news.
            added = own["problem"] - old["problem"] - set(sites)
            added = {c for c in added if self.rules.profile.attribute_of.get(c) != "metastatic_sites"} or added
            # "and if it had been in the liver instead?" swaps that one fact and keeps the rest of the question.
            if q.corrects or self._compatible(added or own["problem"], old["intervention"]):
                carried["intervention"] = old["intervention"]
        # Naming again only the treatment being discussed ("what's the next scan for that?" about equivocal
        # imaging), or another of its kind in its place ("not bone scan - what about PET-CT for that?" about
        # monitoring the response), is the same question: its aspects stay. So does a treatment proposed by a
        # pronoun for a topic that had none ("monitoring bone mets?" -> "could we use PET-CT for that?").
        lex = self.extractor.lexicon.concepts
        kind = {lex[c].label for c in old["intervention"]}
        restated = bool(own["intervention"]) and not own["problem"] and (q.refers_back or q.elliptical) and (
            own["intervention"] <= old["intervention"] or {lex[c].label for c in own["intervention"]} <= kind
            or (not old["intervention"] and q.refers_back))
        if not own["aspect"] - {"research"} and (not own["problem"] and not own["intervention"] or restated
                                                 or (q.corrects and q.elliptical and not own["intervention"])):
            # Research asked about the topic ("any research on carrying it on?") is about all of it.
            carried["aspect"] = old["aspect"]
        elif not (own["problem"] | own["intervention"] | old["problem"] | old["intervention"]):
            # A topic that is a subject of its own (supportive care, information) qualified by a new aspect:
            # "lots of emotional needs" -> "who coordinates her care?" stays on supportive care.
            # With what narrows it ("decision aids for MBC" -> "which one should I give her?": decision aids).
            subjects = (old["aspect"] & self.heading_concepts) - {"research"}
            if subjects and not (own["aspect"] & self.heading_concepts) - {"research"}:
                carried["aspect"] = {c for c in old["aspect"] if self.extractor.lexicon.closure([c]) & subjects}
        elif (not (own["problem"] | old["problem"] | old["intervention"]) and (q.refers_back or q.elliptical)
              and self._compatible(own["intervention"], old["aspect"])):
            # "...or check again at some point?" about her preference for information: what is done about it.
            carried["aspect"] = old["aspect"]
        if q.repeats and not own["intervention"] and topic.get("scans"):
            # "Can we repeat it in 3 months to see if she's responding?" after "bone scan showed mets": that scan.
            carried["intervention"] = set(carried.get("intervention") or ()) | set(topic["scans"])
        carried["history"] = had
        # A treatment the message sets aside is not carried ("who else, besides the wound people?"); a problem
        # it says she has not got still is ("she hasn't got lymphoedema, just at risk").
        if carried.get("intervention"):
            carried["intervention"] = set(carried["intervention"]) - q.negated
        return {r: sorted(v) for r, v in carried.items() if v}

    def _request(self, q: Query, carried: dict, fit: dict, research: bool):
        from assistant.retrieval import SearchRequest

        weights: dict = {}
        lex = self.extractor.lexicon
        # A statement that goes on with the conversation describes the patient: its concepts weigh as
        # a description beside the topic carried over.
        own = 1.0 if q.asks or not carried or q.amends else DESCRIBED_WEIGHT
        for c in q.asked:
            weights[c] = PROFILE_WEIGHT if c in q.profile_concepts else own
        # Sites in a description of the patient ("67M, lung and bone mets, first line?") are who she is, as
        # her receptors are: they select among the candidates more than they are searched.
        context_sites = set()
        if q.sites_as_context:
            her_sites = lex.closure(q.facts.get("metastatic_sites") or [])
            context_sites = {c for c in q.described | q.asked
                             if c in her_sites or self.rules.profile.attribute_of.get(c) == "metastatic_sites"}
            # Unless they are all the message is about ("solitary cerebellar met, PS 0, bone disease stable on
            # an AI - approach?"): then the sites are the topic, searched with the guideline's words.
            if not {c for c in q.roles if c not in her_sites and c not in context_sites}:
                context_sites = set()
        for c in context_sites & q.asked:
            weights[c] = PROFILE_WEIGHT
        for c in q.described:
            weights.setdefault(c, PROFILE_WEIGHT * DESCRIBED_WEIGHT if c in q.profile_concepts or c in context_sites
                               else DESCRIBED_WEIGHT)
        for c in lex.closure(carried.get("history", [])):
            weights.setdefault(c, DESCRIBED_WEIGHT)
        # What this message rules out ("we've established she wants the full picture") is not searched again.
        carried_concepts = lex.closure(c for v in carried.values() for c in v) - q.negated
        for c in carried_concepts:
            # After a statement ("context: CT shows ..."), what is carried is still the question asked.
            weights.setdefault(c, CARRIED_WEIGHT if q.asks else 1.0)
        weights = {c: w for c, w in weights.items() if c in lex.concepts and lex.concepts[c].label not in
                   ("CONDITION", "OUT_OF_SCOPE")}
        expanded = set(q.concepts) | carried_concepts
        # Nor are they spelled out in the search ("lung mets" -> "visceral organ involvement").
        expanded -= context_sites
        had = lex.closure(e.value for e in q.entities if e.historical and not e.negated) - set(q.roles)
        if set(q.roles) - had:
            # A message about something else ("been on zoledronate for two years, new painful rib lesion"): the
            # treatment she has had or is on is her history, not spelled out as a topic.
            expanded -= had
        if q.asked - q.profile_concepts:
            # A case description around a question of its own ("very anxious, wants all the info. How do we
            # give her information?"): the aspects it describes are searched only in the clinician's own
            # words (they still weigh, at DESCRIBED_WEIGHT, among the concepts).
            # What the patient has or had (liver full of mets, bilirubin climbing) is still spelled out: it
            # decides among the treatments asked about; how she feels ("very anxious") is not the question.
            # Nor is what qualifies the treatment asked about ("MRI inconclusive. next imaging?": equivocal imaging).
            expanded -= {c for c in set(q.described) - set(q.asked) if self.analyzer.role(c) not in ("problem", "event")
                         and not (lex.closure([c]) - {c}) & set(q.asked)}
        text = f"{q.search_text} {self.retriever.expansion_of(expanded)}".strip()
        factors = {rid: f.factor for rid, f in fit.items()}
        fits = {rid: len(f.matched) for rid, f in fit.items() if not f.conflicting}
        if carried.get("history"):
            # "and once she's done with it?": a record written for that very treatment history ("treated with
            # chemotherapy as their first-line treatment") is what the question singles out.
            for rid, f in fit.items():
                if rid in fits and set(f.matched) & self.rules.profile.preconditions:
                    fits[rid] += 1
        # What the clinician rules out ("not life threatening", "no brain mets") counts against the
        # recommendations about it.
        negated = {c for c in q.negated if c in lex.concepts and lex.concepts[c].label not in
                   ("CONDITION", "OUT_OF_SCOPE")} - set(q.concepts)
        if negated:
            for r in self.retriever.records:
                if negated & (set(self.retriever.concepts_of(r["id"])) - self.aims[r["id"]]):
                    factors[r["id"]] *= NEGATED_FACTOR
        # Anchored: the question names its problem or intervention, or is a follow-up ("anything after
        # that?") whose problem or intervention the conversation has named.
        anchored = bool(q.role_set("problem") | q.role_set("intervention")) or bool(
            q.elliptical and (carried.get("problem") or carried.get("intervention")))
        # A shorter encoder input than the BM25 text ranks as well and keeps a turn close to one bare
        # encode of the question.
        dense_text = q.encoder_text(lex, (c for v in carried.values() for c in v))
        return SearchRequest(text, weights, set(q.concepts) | carried_concepts, research, factors, anchored,
                             dense_text, fits, q.oos)

    def _aims(self, text: str) -> set:
        """Concepts a recommendation names only as what it is for (its aim clauses), not whom it is for."""
        clauses = [m.group(0) for m in _AIM_RE.finditer(text)]
        if not clauses:
            return set()
        rest = _AIM_RE.sub(" ", text)
        return self.extractor.concepts(" ".join(clauses)) - self.extractor.concepts(rest)

    def _offered(self, record: dict) -> set:
        """The treatments a recommendation offers: the drugs and therapies named right after its 'Offer' or
        'Consider' ("Offer an aromatase inhibitor ... to:"), not those in its conditions ("who have been
        treated with chemotherapy"); or the team it asks to see the patient, or what it says to provide."""
        m = _OFFER_RE.search(record["text"]) if record["strength"] in ("offer", "consider") else \
            _ASKS_FOR_RE.search(record["text"]) if record["strength"] == "other" else None
        if not m:
            return set()
        return {e.value for e in self.extractor.extract(next(g for g in m.groups() if g))
                if e.label in ("DRUG", "THERAPY") and not e.negated}

    def _not_for_patient(self, closest: list, q: Query, carried: dict, fit: dict, state: dict, request,
                         trace: dict) -> Reply:
        """No recommendation fits the patient. Where the guideline names her very situation as a question for
        research (RR2: postmenopausal, ER-positive, progressed on an aromatase inhibitor), that research
        recommendation is its answer, shown as such; otherwise it is said plainly, without quoting the others."""
        progressed = self.rules.profile.progressed_treatments(state.get("prior_therapies") or [])
        research = self._research_for_patient(q, carried, fit, progressed)
        if research is None:
            return Reply("abstain", answer.not_for_patient_text(closest), answer.abstention_payload(
                "not_for_this_patient"), state, query=request.text, trace=trace)
        notes = [answer.research_only_note(closest)]
        answers = [answer.answer_item(self.retriever.by_id[research], None)]
        return Reply("answer", answer.answer_text(answers, notes=notes),
                     answer.payload(answers, reason="not_for_this_patient", notes=notes),
                     {**state, "last_answer_ids": [research]}, query=request.text, trace=trace)

    def _research_for_patient(self, q: Query, carried: dict, fit: dict, progressed: set) -> str | None:
        """The research recommendation written for this patient's history (its treatment-history condition
        matched, none conflicting) on the treatment asked about; when a question names no treatment ("what
        to use after that?"), on the treatment her disease progressed on."""
        asked = q.role_set("intervention") | set(carried.get("intervention", []))
        asked = self.extractor.lexicon.closure(asked or (progressed if q.asks else set()))
        return next(self._research_written_for(fit, asked), None)

    def _research_written_for(self, fit: dict, asked: set, groups: frozenset | set = frozenset()):
        """The research recommendations whose treatment-history condition this patient matches (one of the
        precondition groups, less `groups`), none conflicting, that name a treatment asked about."""
        wanted = self.rules.profile.preconditions - groups
        return (rid for rid, f in fit.items() if self.retriever.by_id[rid]["kind"] == "research"
                and not f.conflicting and set(f.matched) & wanted and asked & self.retriever.named_in(rid))

    def _history_only_researched(self, q: Query, carried: dict, fit: dict, patient: set) -> bool:
        """A treatment asked about for a patient whose early-disease history is the one a research
        recommendation is written for and no recommendation is ("had adjuvant Herceptin, now HER2+ mets -
        anything about more biologics?": RR5): what the guideline says about her is that question for research.
        Not whether to go on with the treatment she is on ("now on trastuzumab, progressing - stop?": 1.3.12)."""
        early = self.rules.profile.early_disease & patient
        if q.research or q.oos or not q.asks or not early or set(q.asked) & self.analyzer.about_current:
            return False
        asked = self.extractor.lexicon.closure(q.role_set("intervention") | set(carried.get("intervention", [])))
        written_for = {g for rid, f in fit.items() if self.retriever.by_id[rid]["kind"] != "research"
                       for g in f.matched}
        return any(early & self.retriever.named_in(rid) for rid in self._research_written_for(fit, asked, written_for))

    @staticmethod
    def _unfit_for_patient(result, request, fit: dict) -> list:
        """The recommendations that would have answered, had the patient's facts not ruled them out."""
        from assistant.retrieval import ABSTAIN_BELOW

        raw = sorted(((c.score / request.factors.get(c.id, 1.0), c.id) for c in result.candidates), reverse=True)
        if not raw or raw[0][0] < ABSTAIN_BELOW or not fit[raw[0][1]].conflicting:
            return []
        return [i for score, i in raw[:3] if score >= ABSTAIN_BELOW and fit[i].conflicting]

    def _research_off_topic(self, result, q: Query, carried: dict) -> bool:
        """Research asked about a topic no research recommendation covers ("any research on fatigue?"):
        the best research recommendation shares none of the question's problems or interventions."""
        topical = self._scored_topic(q) or set(carried.get("problem", [])) | set(carried.get("intervention", []))
        if not topical:
            return False
        top = self.retriever.by_id[result.candidates[0].id]
        if top["kind"] != "research":
            return False
        about = self.retriever.concepts_of(top["id"])
        # Or the next broader concept when it is what the research recommendation is about, its heading
        # ('fungating tumour' is uncontrolled local disease; 'brain metastases' is not RR4's "outside the
        # central nervous system").
        lex = self.extractor.lexicon.concepts
        broader = {b for c in topical if c in lex for b in lex[c].broader}
        return not (set(topical) & set(about)) and not {c for c in broader if about.get(c) == 1.0}

    def _notes(self, q: Query, top: list) -> list:
        age = q.facts.get("_menopause_from_age")
        if age is None or not top:
            return []
        if "patient_group" not in self.conditions.get(top[0].id, {}):
            return []
        return [answer.menopause_note(q.facts["menopausal_status"], age)]

    # ------------------------------------------------------------------ clarification
    def _open_options(self, rule: dict, patient: set) -> list:
        excluded = {x for c in patient for x in self.rules.profile.exclusive.get(c, ())}
        return [o for o in rule["options"]
                if not all(self.extractor.lexicon.closure([c]) & excluded for c in o["concepts"])]

    def _clarify_or_rerank(self, ranked: list, patient: set, fit: dict, choice: bool = False) -> tuple:
        """Apply each clarification rule in turn: a known patient fact moves its recommendations to the
        top (after the rule's general recommendation when it ranks among them, "hormones or chemo first
        line?" -> 1.3.1, unless the question asks which agent); an unknown one that the top answers depend
        on yields (rule, ranked) to ask about."""
        for rule in self.rules.clarifications:
            top = [c.id for c in ranked[: rule.get("top_k", 4)]]
            if not top or top[0] not in rule["trigger_top"]:
                continue
            if rule.get("requires_any") and not patient & set(rule["requires_any"]):
                continue
            options = self._open_options(rule, patient)
            chosen = [o for o in options if patient & set(o["concepts"])]
            if len(chosen) != 1 and len(options) == 1:
                chosen = options
            if len(chosen) == 1 and all(fit[i].conflicting for i in chosen[0]["recommendations"]):
                # Her facts select an option whose recommendations another of her facts rules out (a single
                # brain metastasis, but her other disease progressing): not promoted, nor asked about.
                continue
            if len(chosen) == 1:
                others = {i for o in rule["options"] if o is not chosen[0] for i in o["recommendations"]}
                others -= set(chosen[0]["recommendations"])
                # Recommendations for the other patient groups do not apply: never "also relevant".
                first = list(chosen[0]["recommendations"])
                general = [i for i in rule.get("general", []) if i in top and i not in first]
                if general and not choice and top.index(general[0]) < min(
                        (top.index(i) for i in first if i in top), default=len(top)):
                    first = general[:1] + first
                ranked = [c for c in self._promote(ranked, first) if c.id not in others]
                continue
            # An option counts when one of its recommendations is a real contender, not a distant runner-up
            # ("Femara or Aromasin?" is about the aromatase inhibitor recommendation alone).
            best = ranked[0].score
            contenders = {c.id for c in ranked[: rule.get("top_k", 4)] if c.score >= CLARIFY_CONTENDER * best}
            present = [o for o in options if set(o["recommendations"]) & contenders]
            if not chosen and len(present) >= rule.get("min_options_in_top", 2):
                return rule, ranked
        return None, ranked

    def _promote(self, ranked: list, ids: list) -> list:
        from assistant.retrieval import Candidate

        have = {c.id: c for c in ranked}
        first = [have.get(i) or Candidate(i, score=0.0) for i in ids]
        return first + [c for c in ranked if c.id not in ids]

    @staticmethod
    def _min_score() -> float:
        from assistant.retrieval import MIN_ANSWER_SCORE

        return MIN_ANSWER_SCORE

    # ------------------------------------------------------------------ look-up, listing, updates
    def lookup(self, rec_ids: list, state: dict, update: bool = False) -> Reply:
        found = [i for i in rec_ids if i in self.retriever.by_id]
        missing = [i for i in rec_ids if i not in self.retriever.by_id]
        if not found:
            return Reply("abstain", answer.unknown_ids_text(missing), answer.abstention_payload("unknown_id"),
                         state)
        answers = [answer.answer_item(self.retriever.by_id[i], 1.0) for i in found]
        concepts = self.retriever.named_in(found[0])
        q_roles = {c: self.analyzer.role(c) for c in concepts if self.analyzer.role(c) in ROLES
                   and not self.analyzer.is_profile_concept(c)}
        topic = {r: sorted(c for c, role in q_roles.items() if role == r) for r in ROLES}
        new_state = {**state, "topic": {k: v for k, v in topic.items() if v} or None,
                     "pending_clarification": None, "last_answer_ids": found}
        tags = self.retriever.updates.get("tags", {})
        notes = [answer.year_note(a["id"], a["year"], tags) for a in answers] if update else []
        return Reply("lookup", answer.answer_text(answers, missing=missing, notes=notes),
                     answer.payload(answers, notes=notes), new_state)

    def _update_list(self, q: Query, state: dict) -> Reply | None:
        """'What changed in 2017?', 'recs from the 2014 update', 'what's new?': the recommendations with that
        year tag (the latest update when no year is named), with the guideline's own update note. About a
        topic ("what year is the bisphosphonate rec?") the topic is searched instead and the answer carries
        its year; None hands the turn to that search."""
        years = [y for y in q.years if y in self.years]
        since_first = not q.years and bool(_SINCE_FIRST_RE.search(q.text))
        if since_first:
            years = [min(self.years)]
        # A subject named only as an aspect ("is the decision aids rec 2009 or more recent?") is the topic too;
        # a whole heading ("the most recent rec in the diagnosis bit?") is not one recommendation's subject.
        named = {e.value for e in q.entities if not e.negated}
        topical = self._scored_topic(q) or {c for c, r in q.roles.items() if r == "aspect" and c in named
                                            and c not in self.heading_concepts}
        if (q.years and not years) or (topical and not years) or q.oos:
            return None     # an update about something CG81 does not cover is answered as out of scope
        year = years[0] if years else max(self.years)
        # "What has changed since 2009?": the updates after that year, not the recommendations of it.
        later = [y for y in self.years if y > year] if (_SINCE_RE.search(q.text) or since_first) and years else []
        shown = later or [year]
        records = [r for r in self.retriever.records if r["year"] in shown]
        if q.research and not topical:
            records = [r for r in records if r["kind"] == "research"] or records
        elif topical:
            overlap = {r["id"]: len(topical & set(self.retriever.concepts_of(r["id"]))) for r in self.retriever.records}
            # Among those, first the one that is about what else the message names ("exercise may improve
            # quality of life in lymphoedema - was that added in 2014?": 1.5.2 before 1.5.1).
            also = {r["id"]: len(q.asked & set(self.retriever.concepts_of(r["id"]))) for r in records}
            records = sorted((r for r in records if overlap[r["id"]]),
                             key=lambda r: (-overlap[r["id"]], -also[r["id"]]))
            # "Was the fatigue exercise rec part of the 2014 update?": a record of another year that is more
            # about the topic than any of that year's is the one asked about; the search answers with its year.
            if not records or max(overlap.values()) > overlap[records[0]["id"]]:
                return None
        if not q.research:
            records = sorted(records, key=lambda r: r["kind"] == "research")
        answers = [answer.answer_item(r, None) for r in records]
        new_state = {**state, "topic": {"kind": "update"}, "pending_clarification": None,
                     "last_answer_ids": [r["id"] for r in records]}
        text = "\n\n".join(answer.update_text(y, [r for r in records if r["year"] == y], self.retriever.updates)
                           for y in shown)
        return Reply("list", text, answer.payload(answers), new_state)

    def _scored_topic(self, q: Query) -> set:
        """The problems and interventions the message names itself (not what they imply: 'trastuzumab',
        not 'systemic therapy')."""
        named = {e.value for e in q.entities if not e.negated}
        return {c for c, r in q.roles.items() if r in ("problem", "intervention") and c in named}

    def _naming(self, records: list, q: Query) -> list:
        """The ids of the recommendations (not research) among these that are about every problem and
        intervention the message names itself ("Do not use PET-CT to monitor" is a PET-CT recommendation)."""
        topical = self._scored_topic(q)
        return [r["id"] for r in records if topical and r["kind"] == "recommendation"
                and topical <= set(self.retriever.concepts_of(r["id"]))]

    def _list_request(self, q: Query, intent: str | None, state: dict) -> Reply | None:
        text = q.text
        section = _SECTION_RE.search(text)
        if section:
            sec = section.group(1)
            sec = sec if "." in sec else f"1.{sec}"
            ids = [r["id"] for r in self.retriever.records if r["section"] == sec]
        elif (_RESEARCH_LIST_RE.search(text) and (_LIST_RE.search(text) or intent == "list_recommendations")
              and not self.retriever.topical_concepts(text) - {"research"}
              and not (q.elliptical and (state.get("topic") or {}).get("problem"))):
            # "all research recommendations"; "research recs on chemo sequencing" is searched instead, and
            # so is "any research recs on this?" about the problem being discussed.
            ids = [r["id"] for r in self.retriever.records if r["kind"] == "research"]
        elif _LIST_RE.search(text) and not q.research:
            # The wording decides, not the classifier: "does NICE say anything about X?" is a question
            # even when it is classified as a list request.
            result = self.retriever.search(self.retriever.request(text, list(q.entities)))
            if result.abstained:
                return None
            top = self.retriever.by_id[result.candidates[0].id]
            ids = [r["id"] for r in self.retriever.records
                   if r["section"] == top["section"] and r.get("subsection") == top.get("subsection")]
            # "The PET-CT recs": every recommendation that names it, whichever subsection it is in.
            ids = self._naming(self.retriever.records, q) or ids
        else:
            return None
        if section:
            # "The PET-CT recs in section 1.1": those of the section that name it.
            ids = self._naming([self.retriever.by_id[i] for i in ids], q) or ids
        if not ids:
            return None
        records = [self.retriever.by_id[i] for i in ids]
        answers = [answer.answer_item(r, None) for r in records]
        # The patient and the subject asked about stay for the follow-ups ("HER2+ after adjuvant Herceptin,
        # any recs on biologics?" -> "is anyone researching that?").
        profile, followup, carried = self._context(q, state, intent)
        _, new_topic = self._new_topic(q, state.get("topic") or {}, followup, carried)
        new_state = {**state, **profile, "topic": new_topic or state.get("topic"), "pending_clarification": None,
                     "last_answer_ids": ids}
        return Reply("list", answer.list_text(records), answer.payload(answers), new_state)
