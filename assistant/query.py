"""Parse once: a message becomes one Query that the dialogue and the retrieval share.

The Query holds the cleaned text, its entities (extracted once), affirmed and negated concepts, the
patient facts it states (including age and sex shorthand such as "71F"), the role each topical concept
plays (clinical problem, intervention, aspect such as "who" or "written information"), which concepts
sit in the question and which only in the description of the patient around it, and what kind of
message it is (a reset, an update question, an ellipsis or a pronoun pointing back).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from assistant.entities import REC_ID_LABEL, affirmed_concepts, without_spans
from assistant.privacy import PLACEHOLDERS

RESEARCH_CONCEPT = "research"    # the lexicon concept of questions about research, trials or evidence
_YEAR_RE = re.compile(r"\b(20[0-3]\d)\b")
# Where the channel removed a patient identifier: no part of the question, so not searched.
_PLACEHOLDERS = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
# Age and sex shorthand: "71F", "45 M", "62yo F", "a 58-year-old woman", "woman, 50", "aged 66",
# "in her 60s". Ages outside 18-110 are ignored (they are doses, cycles, percentages).
_AGE_SEX_RE = re.compile(r"\b(?P<age>\d{2,3})\s?(?:y/?o|yrs?|years?)?\s?(?P<sex>[FfMm])\b(?![+\-/])")
_SEX_AGE_RE = re.compile(r"\b(?P<sex>[FfMm])\s?(?P<age>\d{2,3})\b(?!\s*(?:%|mg|gy|cm|mm|kg))")
_AGE_RE = re.compile(
    r"\b(?:aged?\s*(?P<a1>\d{2,3})\b|(?P<a2>\d{2,3})\s*-?\s*(?:y/o|yo|y\.o\.|yrs? old|years? old|-year-old|"
    r"year old|yr old)\b|(?:woman|lady|female|man|male|gentleman|gent|chap|pt|patient|she'?s|he'?s|she is|he is)"
    r"\s*,?\s*(?P<a3>\d{2})\b"
    r"(?!\s*(?:%|mg|gy|cm|mm|kg|cycles?|weeks?|months?|days?|yrs?|years?|fractions?|mets?)))", re.IGNORECASE)
_DECADE_RE = re.compile(r"\b(?:in )?(?:her|his|their|the) (?P<d>[2-9]0)'?s\b", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(
    r"(?<=[.?!;])\s+|\n+|\s+[-\u2013\u2014]+\s+|:\s+"
    r"|,\s*(?=(?:so\s+|and\s+|but\s+)?(?:what|which|how|should|would|could|can|do|does|is|are|any|when|who|whats|"
    r"what's|next|now)\b)", re.IGNORECASE)
# Between the services of a list: commas, slashes, '&', 'and', '+'.
_LIST_SEP = r"\s*(?:,\s*(?:and\s+)?|/|&|\band\b|\+|\.{2,})\s*"
_QUESTION_CUE = re.compile(
    r"\?|^\s*(?:so\s+|and\s+|but\s+|ok,?\s+)?(?:what|which|how|should|would|could|can|do|does|is|are|any|when|who|"
    r"whats|what's|next|options?|management|mgmt|plan|treatment|tx|recommend|advice|role of|best)\b"
    # An indirect question asks too ("her husband's asking if she should be on bisphosphonates").
    r"|\b(?:ask(?:s|ed|ing)?|wonder(?:s|ed|ing)?|want(?:s|ed)? to know|not sure|unsure|query(?:ing)?)\s+"
    r"(?:if|whether|about|what|which|how|when|who)\b",
    re.IGNORECASE)
_GUIDELINE_WORDS = re.compile(r"\b(rec(s|ommendations?)?|guidelines?|cg81|nice|section|update[ds]?|committee)\b",
                              re.IGNORECASE)
VIGNETTE_WORDS = 8          # a description of the patient this long before the question is a vignette
# Patient facts that make a message a description of the patient: its metastatic sites are then context
# (profile), not the clinical problem of the topic.
_DESCRIPTIVE_FACTS = {"sex", "age_group", "menopausal_status", "er_status", "her2_status", "prior_therapies",
                      "line_of_therapy"}
_PROFILE_LABELS = {"SEX", "MENOPAUSAL_STATUS", "PRIOR_THERAPY", "LINE_OF_THERAPY"}
_UNSCORED_LABELS = {"CONDITION", "OUT_OF_SCOPE", REC_ID_LABEL}
_TREATMENT_LABELS = {"DRUG", "THERAPY"}


@dataclass(frozen=True)
class Query:
    text: str
    entities: tuple
    concepts: frozenset              # affirmed concepts with what they imply
    negated: frozenset               # concepts the message negates ("no brain mets")
    rec_ids: tuple
    facts: dict                      # patient facts stated in this message (profile attribute -> value)
    age: int | None
    roles: dict                      # topical concept -> problem | intervention | aspect | event
    asked: frozenset                 # topical concepts in the question part
    described: frozenset             # topical concepts only in the description of the patient
    profile_concepts: frozenset      # concepts that describe the patient (not searched as the topic)
    oos: tuple                       # out-of-scope concepts the message asks about
    years: tuple
    reset: bool
    update: bool
    elliptical: bool
    leading_ellipsis: bool           # starts like a follow-up: "and for men?", "what about..."
    asks: bool                       # a question (or an ellipsis), not only a statement about the patient
    words: int
    search_text: str                 # the text with negated spans cut out
    question: str = ""               # the question part of a vignette (the whole text otherwise)
    question_start: int = 0          # where the question part starts in the text
    sequel: bool = False             # asks what follows the treatment discussed ("anything after that?")
    sequel_of: frozenset = frozenset()  # the treatment it names as finished ("once the chemo's done")
    sites_as_context: bool = False   # sites mentioned beside other patient facts describe the patient
    refers_back: bool = False        # a pronoun for the subject discussed ("could RT control it?")
    amends: bool = False             # adds to or corrects the patient ("she's also...", "actually...")
    corrects: bool = False           # replaces what was said ("actually it's her spine")
    acknowledges: bool = False       # thanks or an acknowledgement ("brill, thanks, that's helpful")
    ruled_out: frozenset = frozenset()  # what a finding settles ("bloods all normal": treatable causes)
    other_branch: bool = False       # asks for the other branch of the decision ("when would you go the other way?")
    shifts_topic: bool = False       # says the subject changes ("on another note", "moving on")
    repeats: bool = False            # asks to do a scan again ("can we repeat it in 3 months?")
    past_oos: frozenset = frozenset()  # out of scope only as her past, in a message naming no advanced disease
    extras: dict = field(default_factory=dict)

    def role_set(self, role: str) -> set:
        return {c for c, r in self.roles.items() if r == role}

    def encoder_text(self, lexicon, carried=()) -> str:
        """What the sentence encoder sees: the message (negations cut out) and the guideline wording of
        the concepts it names plus any carried over -- not of everything they imply, and not of
        'advanced breast cancer', which every record is about. The fine-tuning builds its training
        questions the same way, so the encoder is trained on the input it gets at run time."""
        named = {e.value for e in self.entities if not e.negated and e.value in lexicon.concepts
                 and lexicon.concepts[e.value].label != "CONDITION"} | set(carried)
        return f"{self.search_text} {lexicon.expansion(named)}".strip()

    @property
    def research(self) -> bool:
        return RESEARCH_CONCEPT in self.concepts


class Analyzer:
    """Turns a cleaned message into a Query with the lexicon and the dialogue rules."""

    def __init__(self, extractor, rules) -> None:
        self.extractor = extractor
        self.lexicon = extractor.lexicon
        self.rules = rules
        roles = rules.roles
        self._label_role = {**{lab: "problem" for lab in roles["problem_labels"]},
                            **{lab: "intervention" for lab in roles["intervention_labels"]},
                            **{lab: "aspect" for lab in roles["aspect_labels"]}}
        self._overrides = roles.get("overrides", {})
        self.about_current = frozenset(roles.get("about_current_treatment", []))
        self._about_preceding = frozenset(roles.get("about_what_precedes", []))
        self._oos_history = frozenset(rules.oos_as_history)
        self._oos_in_case = rules.oos_in_case
        self._reset = [re.compile(p, re.IGNORECASE) for p in rules.reset_patterns]
        self._ellipsis = re.compile(rules.ellipsis_start, re.IGNORECASE)
        self._anaphora = re.compile(rules.anaphora, re.IGNORECASE)
        self._points_back = re.compile(rules.points_back, re.IGNORECASE) if rules.points_back else None
        self._sequel = re.compile(rules.sequel, re.IGNORECASE) if rules.sequel else None
        self._phrasing = {k: re.compile(p, re.IGNORECASE) for k, p in rules.phrasing.items()}
        self._update_words = re.compile(rules.update["words"], re.IGNORECASE)
        self._update_phrases = [re.compile(p, re.IGNORECASE) for p in rules.update["phrases"]]
        self._dated_evidence = re.compile(rules.update["dated_evidence"], re.IGNORECASE)
        services = rules.services_in_care
        self._services = re.compile(
            rf"(?:{services['lead']})\s+(?P<services>(?:{services['service']})\b(?:{_LIST_SEP}(?:{services['service']})\b)+)",
            re.IGNORECASE) if services else None

    def role(self, concept: str) -> str | None:
        if concept in self._overrides:
            return self._overrides[concept]
        return self._label_role.get(self.lexicon.concepts[concept].label)

    def is_profile_concept(self, concept: str) -> bool:
        """A fact about the patient rather than a topic (a metastatic site is both: it is a topic when
        asked about, a fact when described)."""
        attribute_of = self.rules.profile.attribute_of
        c = self.lexicon.concepts[concept]
        if c.label in _PROFILE_LABELS:
            return True
        if attribute_of.get(concept, "metastatic_sites") != "metastatic_sites":
            return True
        return c.label == "RECEPTOR" and any(attribute_of.get(b) in ("er_status", "her2_status") for b in c.broader)

    def analyse(self, text: str) -> Query:
        entities = tuple(self.extractor.extract(text))
        if self._services:
            # The services she already sees ("between onc, palliative and her GP") are her care so far: the
            # teams named there are no topic (the question is how that care is organised).
            listed = [m.span("services") for m in self._services.finditer(text)]
            entities = tuple(e for e in entities if not any(a <= e.start and e.end <= b for a, b in listed))
        lex = self.lexicon
        rec_ids = tuple(dict.fromkeys(e.value for e in entities if e.label == REC_ID_LABEL))
        years = tuple(int(y) for y in _YEAR_RE.findall(text))
        # "what changed in 2017?", "is 1.1.6 new?", "recs added in the last update": a year or an ID with
        # an update word, or an update phrase on its own. A year in a case history is not enough.
        update = any(p.search(text) for p in self._update_phrases) or bool(
            (years or rec_ids) and (self._update_words.search(text) or (years and _GUIDELINE_WORDS.search(text))))
        if update:
            # "How old is the evidence behind the PET-CT recs?": the review the year tag dates, not research.
            entities = tuple(e for e in entities
                             if not (e.value == RESEARCH_CONCEPT and self._dated_evidence.search(e.text)))
        question, q_start, q_end = self._question_part(text)
        # A finding that rules something out ("bloods all normal") negates its mentions ("Hb, TSH") -- in the
        # description; a question after it asks about that very thing ("wants to know everything but her
        # husband says not to tell her much. how do we pitch info?").
        ruled = {c for e in entities if not e.negated for c in self.rules.rules_out.get(e.value, ())}
        if ruled:
            entities = tuple(dataclasses.replace(e, negated=True)
                             if e.value in ruled and not (0 < q_start <= e.start) else e for e in entities)
        history = {h for e in entities if e.historical
                   for h in [self.rules.profile.history(e.value, negated=e.negated)] if h}
        # A treatment asked about in the question after a description ("progressed on tamoxifen. Is an
        # aromatase inhibitor next?") is not history: it takes no part in the history inferences
        # ('aromatase inhibitor' + 'progression' -> progressed on an AI).
        asked = [e for e in entities if q_start > 0 and e.start >= q_start and not e.historical
                 and e.label in _TREATMENT_LABELS and not e.negated]
        concepts = frozenset(affirmed_concepts(lex, [e for e in entities if e not in asked])
                             | lex.closure((e.value for e in asked), infer=False) | lex.closure(history))
        negated = frozenset(e.value for e in entities if e.negated and e.label != REC_ID_LABEL) | ruled
        facts = self.rules.profile.facts_of(concepts, order=[e.value for e in entities])
        age, sex = self._age_sex(text)
        if sex and "sex" not in facts and "menopausal_status" not in facts:
            facts["sex"] = sex
        if age is not None:
            facts["age_group"] = f"{age // 10 * 10}s"
            meno = self.rules.profile.menopause_from_age(age, facts.get("sex"))
            if meno and "menopausal_status" not in facts:
                facts["menopausal_status"] = meno
                facts["_menopause_from_age"] = age
        # What describes the patient: facts (and what they imply: 'prior chemotherapy' implies
        # 'chemotherapy') and treatments named as history. A concept also named as a topic stays a topic.
        named = [e for e in entities if not e.negated and e.label != REC_ID_LABEL]
        describing = [e for e in named if e.historical or self.is_profile_concept(e.value)]
        topical = lex.closure(e.value for e in named if e not in describing)
        profile_concepts = frozenset(
            (lex.closure(e.value for e in describing) | {c for c in concepts if self.is_profile_concept(c)})
            - (topical - {c for c in topical if self.is_profile_concept(c)}))
        roles: dict = {}
        asked: set = set()
        described: set = set()
        for e in entities:
            if e.negated or e.label in _UNSCORED_LABELS:
                continue
            for c in lex.closure([e.value]):
                if lex.concepts[c].label in _UNSCORED_LABELS:
                    continue
                inside = q_start <= e.start and e.end <= q_end
                (asked if inside else described).add(c)
        # Concepts implied only by combinations ("tamoxifen" + "progressed" -> progressed_on_tamoxifen);
        # a treatment history ("on letrozole" -> prior AI) describes.
        described |= lex.closure(history) - asked
        for c in concepts - asked - described:
            if lex.concepts[c].label not in _UNSCORED_LABELS:
                asked.add(c)
        described -= asked
        # A short lead-in ("CT inconclusive for bony mets, should I get an MRI?") is part of the question;
        # only a real case description is weighed as description.
        vignette = len(re.findall(r"[A-Za-z0-9+]+", text[:q_start])) >= VIGNETTE_WORDS
        # Out of scope is what is asked about: in a case description, "early breast cancer in 2015" or
        # "stopped letrozole because of side effects" is history, and the question after it may be in scope.
        # A question that names nothing of its own ("is that standard?", "how do I manage that?") asks
        # about the clause before it, and what that clause names counts as asked.
        # A line of therapy asked about ("first line tx?") is the question's own; asking for the evidence
        # is not ("palbociclib + AI, what's the evidence?" asks about palbociclib). What follows the question
        # in a case description ("... chemo first? she says she'll accept the side effects") describes.
        oos_start, oos_end = q_start, (q_end if vignette and q_end < len(text) else len(text))
        if not any(q_start <= e.start and not e.negated and e.label not in _UNSCORED_LABELS
                   and not lex.concepts[e.value].out_of_scope and e.value not in self._about_preceding
                   and (not self.is_profile_concept(e.value) or e.label == "LINE_OF_THERAPY")
                   for e in entities):
            oos_start = self._previous_clause_start(text, q_start)
            if vignette and oos_start < q_start:
                # "... never had endocrine. colleague suggests chemo 1st line - NICE view?": the proposal is asked
                # (before roles are given, so a line of therapy moved here is the topic's aspect).
                before = {c for e in entities if oos_start <= e.start < q_start and not e.negated
                          and not e.historical and e.label not in _UNSCORED_LABELS for c in lex.closure([e.value])}
                moved = before & described
                asked |= moved
                described -= moved
        for c in asked | described:
            role = self.role(c)
            if c in profile_concepts:
                # Patient facts are not topics, except a line of therapy asked about: "first line?" is
                # the aspect of the treatment question that a follow-up ("and for a man?") keeps.
                if not (c in asked and lex.concepts[c].label == "LINE_OF_THERAPY"):
                    continue
                role = "aspect"
            if role:
                roles[c] = role
        # Whether to continue or stop is asked of the treatment the patient is on ("on Herceptin, liver
        # progression - continue?"): that treatment is the intervention of the topic as well as history.
        if (set(asked) | set(described)) & self.about_current:
            for e in entities:
                if e.historical and not e.negated:
                    roles.update({c: "intervention" for c in lex.closure([e.value], infer=False)
                                  if self.role(c) == "intervention"})
        if not vignette:
            asked |= described
            described = set()
        # Early disease in her past is history beside advanced disease ("2 years after early BC, now bone
        # mets"), not in a question about early disease alone ("RT after WLE for DCIS?"), nor in a case that
        # describes only early disease ("neoadjuvant for a 3cm HER2+ early breast ca - TCHP or EC then THP?").
        advanced = bool(concepts & self.rules.advanced_disease) or any(
            self.role(c) in ("problem", "event") for c in concepts if not lex.concepts[c].out_of_scope)
        oos = tuple(sorted({c for e in entities if not e.negated and lex.concepts.get(e.value)
                           and lex.concepts[e.value].out_of_scope
                           and not (e.historical and e.value in self._oos_history and advanced)
                           and (not vignette or oos_start <= e.start < oos_end
                                or (e.value in self._oos_in_case and not e.historical)
                                or (e.value in self._oos_history and not advanced))
                           for c in [e.value]}))
        # "Once the chemo's done, what then?": what follows a treatment; the treatment named inside that
        # phrase is the one finished, not one asked about. In a case description only the question counts.
        offset = q_start if vignette else 0
        sequel = list(self._sequel.finditer(text[offset:q_end] if vignette else text)) if self._sequel else []
        sequel_of = frozenset(lex.closure((e.value for e in entities if e.label in _TREATMENT_LABELS and any(
            m.start() + offset <= e.start and e.end <= m.end() + offset for m in sequel)), infer=False))
        # "dose of RT for a painful rib met": the guideline states that dose (1.5.16).
        oos = self.unanswered(oos, concepts)
        words = len(re.findall(r"[A-Za-z0-9+]+", text))
        return Query(
            text=text, entities=entities, concepts=concepts, negated=negated, rec_ids=rec_ids, facts=facts,
            age=age, roles=roles, asked=frozenset(asked), described=frozenset(described),
            profile_concepts=profile_concepts, oos=oos, years=years,
            reset=any(p.search(text) for p in self._reset), update=update,
            elliptical=bool(self._ellipsis.match(text) or (words <= 8 and self._anaphora.search(text))
                            or (self._points_back and self._points_back.search(text))),
            leading_ellipsis=bool(self._ellipsis.match(text)),
            asks=bool(_QUESTION_CUE.search(text) or self._ellipsis.match(text)
                      or any(_QUESTION_CUE.search(c) for c in _CLAUSE_SPLIT.split(text) if c)),
            words=words, question=question, question_start=q_start, sequel=bool(sequel), sequel_of=sequel_of,
            ruled_out=frozenset(ruled),
            sites_as_context=bool(set(facts) & _DESCRIPTIVE_FACTS),
            refers_back=self._says("refers_back", question or text), amends=self._says("amends", text),
            corrects=self._says("corrects", text), acknowledges=self._says("acknowledgement", text),
            other_branch=self._says("other_branch", text), shifts_topic=self._says("shifts_topic", text),
            repeats=self._says("repeats", text),
            past_oos=frozenset(c for c in oos if c in self._oos_history and all(
                e.historical for e in entities if e.value == c and not e.negated)),
            search_text=" ".join(_PLACEHOLDERS.sub(" ", without_spans(text, [e for e in entities if e.negated]))
                                 .split()))

    def unanswered(self, oos, concepts) -> tuple:
        """The out-of-scope concepts the guideline does not answer together with these concepts."""
        return tuple(c for c in oos
                     if not any(c == o and others <= set(concepts) for o, others in self.rules.oos_answered_with))

    def answered_elsewhere(self, q: Query, context: set) -> tuple:
        """The out-of-scope concepts for what the question asks that the guideline answers only together with
        concepts the conversation does not name (fractionation is given for bone metastases alone)."""
        return tuple(oos for c, (oos, needs) in self.rules.answered_only_with.items()
                     if c in q.asked and not needs & context and oos not in q.oos)

    def _says(self, pattern: str, text: str) -> bool:
        return pattern in self._phrasing and bool(self._phrasing[pattern].search(text))

    @staticmethod
    def _age_sex(text: str) -> tuple:
        age = sex = None
        for rx in (_AGE_SEX_RE, _SEX_AGE_RE):
            m = rx.search(text)
            if m and 18 <= int(m.group("age")) <= 110:
                return int(m.group("age")), "female" if m.group("sex").lower() == "f" else "male"
        m = _AGE_RE.search(text)
        if m:
            value = int(next(g for g in m.groups() if g))
            age = value if 18 <= value <= 110 else None
        if age is None:
            d = _DECADE_RE.search(text)
            if d:
                age = int(d.group("d"))
        return age, sex

    @staticmethod
    def _previous_clause_start(text: str, q_start: int) -> int:
        """Where the clause before the question starts."""
        ends = [m.end() for m in _CLAUSE_SPLIT.finditer(text[:q_start])]
        if ends and ends[-1] >= q_start - 2:
            ends.pop()
        return ends[-1] if ends else 0

    @staticmethod
    def _question_part(text: str) -> tuple:
        """(question, start, end): the last clause that asks something; the clauses before it describe
        the patient. A message of one clause is all question."""
        spans = []
        pos = 0
        for m in _CLAUSE_SPLIT.finditer(text):
            if m.start() > pos:
                spans.append((pos, m.start()))
            pos = m.end()
        if pos < len(text):
            spans.append((pos, len(text)))
        if len(spans) <= 1:
            return text, 0, len(text)
        asking = [s for s in spans if _QUESTION_CUE.search(text[s[0]:s[1]])]
        if not asking:
            return text, 0, len(text)
        start, end = asking[-1]
        # "... bone mets. What imaging? And for the liver?" keeps every asking clause at the end.
        for s in reversed(asking[:-1]):
            if s[1] + 3 >= start:
                start = s[0]
        return text[start:end], start, end
