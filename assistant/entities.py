"""Lexicon entity extraction: a blank English spaCy pipeline with a PhraseMatcher over the terminology.

No downloaded model: the same component runs inside the Rasa server (spaCy 3.4, Python 3.10) and in
the core (newer spaCy), so it uses only APIs both share. No `from __future__ import annotations`:
spaCy 3.4 resolves the factory's type hints at run time.
"""


import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import spacy
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span
from spacy.util import compile_infix_regex, compile_suffix_regex, filter_spans

from assistant.lexicon import Lexicon
from assistant.memo import BoundedMemo

REC_ID_LABEL = "REC_ID"
# "1.3.4", "rec 1.5.16", "RR2", "RR 2", "research recommendation 4". Any number of that shape is an
# ID request, so "1.3.13" or "RR9" get "no such recommendation" rather than a search.
REC_ID_RE = re.compile(
    r"(?<![\d.])(?P<rec>1\.\d\.\d{1,2})(?![\d.]*\d)|\bRR\s?(?P<rr>\d{1,2})\b"
    r"|\bresearch\s+rec(?:ommendation)?s?\s*(?:no\.?|number|#)?\s*(?P<rr2>\d{1,2})\b",
    re.IGNORECASE,
)
_FUZZY_MIN_LEN = 7
# ConText-style negation: a cue at most three tokens before a concept, with no clause break between
# ("not life threatening", "no brain mets"). Multiword terms that carry their own negation
# ("not previously treated with tamoxifen") are matched whole and are not affected.
# Typed without the apostrophe too, as clinicians do in chat: the tokenizer splits "havent" into "have" "nt".
_NEGATION_CUES = {"not", "no", "without", "non", "never", "isn't", "isnt", "aren't", "wasn't",
                  "n't", "nt", "nor", "exclude", "excluded", "excluding", "cannot", "besides", "except",
                  "declined", "refused"}  # "declined tamoxifen back then": not part of her treatment history
# Cues after the concept ("DVT excluded", "treatable causes ruled out") and two-word cues before it
# ("rule out DVT"): what has been ruled out is not what is asked about.
_POST_NEGATION = {"excluded", "ruled", "negative", "absent", "clear"}   # "... brain clear"
_PRE_NEGATION_PAIRS = {("rule", "out"), ("ruled", "out"), ("rather", "than"), ("instead", "of"),
                       ("apart", "from"), ("aside", "from"), ("other", "than"),  # "who else apart from the wound team?"
                       ("over", "other"), ("vs", "other"), ("versus", "other")}  # "MRI - when over other imaging?"
# "Has chosen chemo over BSC": what a choice is made over is set aside.
_CHOICE_VERBS = {"chose", "chosen", "choose", "chooses", "choosing", "prefers", "preferred", "prefer", "opted",
                 "opts", "picked", "wants", "favours", "favors"}
# A check said to be done ("we've already looked for treatable causes"): what it looked for is not asked about.
_DONE_CHECKS = {("looked", "for"), ("checked", "for"), ("screened", "for"), ("tested", "for")}
_PERFECT = {"already", "'ve", "ve", "have", "has", "had", "been"}
# Words between the concept and such a cue: "treatable causes have all been looked for and excluded".
_POST_FILLERS = {"has", "have", "had", "been", "was", "were", "is", "are", "all", "now", "already", "both",
                 "looked", "checked", "screened", "investigated", "for", "and"}
_POST_REACH = 7
_CLAUSE_BREAK = {",", ";", ".", "-", "–", "—", "?", "!", "but", "and", "or", "then"}
_NEGATION_WINDOW = 3
# A cue that negates an effect on the concept, not the concept ("exercise doesn't make arm swelling worse",
# "won't cause lymphoedema"): the concept is still what is talked about.
_EFFECT_VERBS = {"make", "makes", "making", "cause", "causes", "causing", "worsen", "worsens", "affect",
                 "affects", "trigger", "triggers", "aggravate", "aggravates"}
# Nor does one before its use, as recommendations are worded and clinicians quote them ("the don't use PET-CT
# for monitoring rec", "not using a bone scan to see if treatment is working"): the test is the topic.
_USE_VERBS = {"use", "uses", "using", "used"}
_UNLESS_WINDOW = 5
# ConText-style history: a treatment the patient has had or is on ("had 6 cycles of docetaxel",
# "stable on letrozole", "progressed after tamoxifen") is part of the treatment history, not the
# treatment asked about. Cues are token sequences ending at most three tokens before the concept.
_HISTORY_CUES = [c.split() for c in (
    "had", "has had", "have had", "finished", "finishing", "completed", "completing", "received", "after",
    "following", "post",
    "previous", "previously", "prior", "was on", "been on", "is on", "currently on", "already on", "while on",
    "whilst on", "stable on", "progressed on", "progressing on", "progression on", "relapsed on", "failed",
    "failure of", "failing", "treated with", "pretreated with", "exposed to", "responded to", "responding to",
    "response to", "she's on", "he's on", "on adjuvant", "adjuvant", "neoadjuvant", "since", "given", "started",
    "commenced", "s / p", "status post", "got", "has got", "was given", "been given", "underwent",
    "went through", "gone through", "never any", "never on", "never been on", "never received", "never taken",
    # Care given by a team or a clinic: "been seen by ortho", "known to palliative care", "has done her CDT".
    "been seen by", "was seen by", "already seen by", "been reviewed by", "was reviewed by", "been assessed by",
    "was assessed by", "been discussed at", "was discussed at", "been discussed in", "was discussed in",
    "already discussed at", "known to", "been referred to", "was referred to", "already referred to",
    "is seeing", "'s seeing", "already seeing", "been seeing", "currently seeing", "pt seeing", "patient seeing",
    "under the care of", "under the",
    "has done", "have done", "had done", "already done", "'s done", "'s finished", "'s completed",
    "fitted her", "fitted him", "been fitted with",
    "fitted with")]
_LOOK_WORDS = {"look", "looks", "looking", "looked"}
_HISTORY_LABELS = {"DRUG", "THERAPY", "IMAGING", "OUT_OF_SCOPE"}
# A condition in the patient's past ("2 years after early BC", "treated for early breast cancer in 2015");
# not "adjuvant letrozole for early breast cancer?", which asks about it.
_PAST_CONDITION_CUES = [c.split() for c in (
    "after", "had", "has had", "have had", "previous", "previously", "prior", "history of", "hx of", "treated for",
    "following", "post", "since", "years after", "yrs after")]
# A scan whose findings are being reported ("xray shows a lytic lesion", "lesion on CT", "bone scan done",
# "CT equivocal") has been done: it describes the patient, it is not the imaging asked about.
_FINDING_AFTER = {"shows", "showed", "shown", "show", "reveals", "revealed", "demonstrates", "demonstrated",
                  "confirms", "confirmed", "found", "finds", "reported", "suggests", "suggested", "suggestive",
                  "done", "came", "was", "were", "report", "reports", ":", "equivocal", "inconclusive",
                  "indeterminate", "unclear", "normal", "negative", "unremarkable", "abnormal", "clear"}
_SCANNED_REACH = 6       # "x-ray of her left femur shows": what was scanned, then the finding
_SENTENCE_END = {".", ";", "?", "!"}
_LIST_JOINS = {",", "and", "or", "nor", "/"}
_COORDINATION = {"and", "then", "+", "&", "plus", ",", "followed", "by", "/"}
_HISTORY_WINDOW = 3
# Words that only qualify the treatment between a history cue and the treatment ("had 6 cycles of
# first-line docetaxel", "received two courses of weekly paclitaxel"), and words after it that say it is over.
_TREATMENT_QUALIFIERS = {"x", "cycles", "cycle", "courses", "course", "doses", "of", "with", "a", "an", "the", "some",
                         "first", "second", "third", "1st", "2nd", "3rd", "line", "based", "containing",
                         "weekly", "single", "agent", "combination", "her", "his", "their", "iv", "oral"}
_HISTORY_AFTER = {"completed", "complete", "finished", "done", "over", "ended", "stopped",
                  "working", "helping", "responding"}  # "to see if the letrozole is working": she is on it
# A team or therapy said to have seen the patient ("the MDT has discussed her", "wound care team saw her").
_CARE_AFTER = {"discussed", "seen", "saw", "reviewed", "assessed", "fitted", "doing", "managing", "involved",
               "sorted", "arranged", "organised", "organized"}  # "dressings are sorted"
_OVER_FILLERS = {"now", "is", "was", "are", "were", "has", "have", "been", "just", "all", "both", "fully", "also",
                 "already", "team", "teams", "nurse", "nurses", "clinic", "service"}  # "chemo has now finished"
_HISTORY_REACH = 10
# A treatment or condition dated in the past is history: "ALND 2018", "mastectomy (2015)", "WLE in 2019",
# "letrozole 3 yrs ago" -- not a year naming an update ("denosumab 2017 update?").
_DATED_AFTER = re.compile(r"\s*(?:in\s+|\(\s*)?(?:(?:19|20)\d\d\b(?!\s*(?:update|version|guid|rec|change))"
                          r"|\d+\s*(?:y|yr|yrs|years?|m|mo|mos|months?|w|wks?|weeks?)\s+ago\b)", re.IGNORECASE)
_PATIENT_WORDS = {"her", "him", "them", "she", "he", "they", "pt", "patient"}  # skipped: "start her on"
# "on <drug>" is what the patient takes, unless the words before make it a subject ("NICE's view on").
_ABOUT_WORDS = {"guidance", "advice", "recommendation", "recommendations", "recs", "rec", "info", "information",
                "evidence", "research", "data", "trials", "trial", "view", "views", "say", "says", "said",
                "position", "stance", "nice", "guideline", "anything", "something", "more", "focus", "decide",
                "decision", "opinion", "thoughts", "rely", "start", "started", "starting", "put", "go", "going",
                "switch", "switched", "switching", "move", "moving", "keep", "kept", "stay", "staying", "take",
                "based", "depend", "depends", "depending", "impact", "effect", "effects", "agree", "agreed"}
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Entity:
    start: int
    end: int
    text: str
    label: str
    value: str
    negated: bool = False
    historical: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _edit_distance_at_most(a: str, b: str, limit: int) -> bool:
    """Damerau-Levenshtein distance (adjacent transpositions) <= limit, with an early exit."""
    if abs(len(a) - len(b)) > limit:
        return False
    prev2: list = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return False
        prev2, prev = prev, cur
    return prev[-1] <= limit


class LexiconMatcher:
    """Sets doc.ents to lexicon concepts (label = concept label, kb_id = concept id)."""

    def __init__(self, nlp: Language, lexicon: Lexicon, fuzzy: bool = True) -> None:
        self.lexicon = lexicon
        self.fuzzy = fuzzy
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        words: set = set()
        for concept in lexicon.concepts.values():
            patterns = list(nlp.tokenizer.pipe(concept.terms))
            self.matcher.add(concept.id, patterns)
            words.update(t.lower_ for doc in patterns for t in doc if t.is_alpha)
        self.words = words
        self.long_words: dict = {}
        for word in words:
            if len(word) >= _FUZZY_MIN_LEN:
                self.long_words.setdefault(len(word), []).append(word)

    def _correct(self, token) -> str | None:
        """The nearest lexicon word, one edit away (two for long words), from a token: 'lymphodema'."""
        word = token.lower_
        # Listed ordinary words ('presenting', 'extensive') are spelled as meant.
        if not token.is_alpha or len(word) < _FUZZY_MIN_LEN or word in self.lexicon.not_typos:
            return None
        limit = 2 if len(word) >= 10 else 1
        best = None
        for length in range(len(word) - limit, len(word) + limit + 1):
            for cand in self.long_words.get(length, ()):
                if cand != word and cand[0] == word[0] and _edit_distance_at_most(word, cand, limit):
                    if best is None or _edit_distance_at_most(word, cand, 1):
                        best = cand
        return best

    def _spans(self, doc: Doc, target: Doc) -> list:
        return [Span(doc, start, end, label=self.lexicon.concepts[doc.vocab.strings[mid]].label,
                     kb_id=doc.vocab.strings[mid]) for mid, start, end in self.matcher(target)]

    def __call__(self, doc: Doc) -> Doc:
        spans = self._spans(doc, doc)
        if self.fuzzy:
            # Typos: correct tokens that no term covers, then keep the new matches that use a correction.
            covered = {i for s in spans for i in range(s.start, s.end)}
            fixed = [None if t.i in covered else self._correct(t) for t in doc]
            if any(fixed):
                target = Doc(doc.vocab, words=[f or t.text for f, t in zip(fixed, doc)],
                             spaces=[bool(t.whitespace_) for t in doc])
                spans += [s for s in self._spans(doc, target) if any(fixed[s.start:s.end])]
        for m in REC_ID_RE.finditer(doc.text):
            span = doc.char_span(m.start(), m.end(), alignment_mode="expand")
            if span is not None:
                value = m.group("rec") or f"RR{m.group('rr') or m.group('rr2')}"
                spans.append(Span(doc, span.start, span.end, label=REC_ID_LABEL, kb_id=value))
        doc.ents = sorted(filter_spans(spans), key=lambda s: s.start)
        return doc


_LEXICONS: dict = {}


@Language.factory("cg81_lexicon_matcher", default_config={"lexicon_path": None, "fuzzy": True})
def make_lexicon_matcher(nlp: Language, name: str, lexicon_path, fuzzy: bool) -> LexiconMatcher:
    key = lexicon_path or ""
    if key not in _LEXICONS:
        _LEXICONS[key] = Lexicon.load(lexicon_path) if lexicon_path else Lexicon.load()
    return LexiconMatcher(nlp, _LEXICONS[key], fuzzy)


def make_nlp(lexicon_path: str | None = None, fuzzy: bool = True) -> Language:
    """Blank English with clinical tokenisation: 'ER+/PR-' → 'ER' '+' '/' 'PR' '-'."""
    nlp = spacy.blank("en")
    infixes = list(nlp.Defaults.infixes) + [r"(?<=[A-Za-z0-9])[+/](?=[A-Za-z0-9])", r"(?<=[+\-])/",
                                             r"(?<=[A-Za-z0-9])[+\-](?=/)"]
    suffixes = list(nlp.Defaults.suffixes) + [r"\+", r"(?<=[A-Za-z0-9])-", r"(?<=\+)ve", r"(?<=-)ve"]
    nlp.tokenizer.infix_finditer = compile_infix_regex(infixes).finditer
    nlp.tokenizer.suffix_search = compile_suffix_regex(suffixes).search
    nlp.add_pipe("cg81_lexicon_matcher", config={"lexicon_path": lexicon_path, "fuzzy": fuzzy})
    return nlp


class EntityExtractor:
    """Text in, labelled spans with canonical values out."""

    def __init__(self, lexicon_path: str | None = None, fuzzy: bool = True) -> None:
        self.nlp = make_nlp(lexicon_path, fuzzy)
        self.lexicon: Lexicon = self.nlp.get_pipe("cg81_lexicon_matcher").lexicon
        self._cache = BoundedMemo(_CACHE_SIZE)

    def _extract(self, text: str) -> tuple:
        doc = self.nlp(text)
        out, last = [], None
        previous = None     # the last treatment-like span: (span, historical, its index in out)
        for e in doc.ents:
            # A treatment joined to one the patient has had ("had surgery and then WBRT") is history too.
            joined = previous is not None and _joined(doc, previous[0], e)
            historical = e.label_ in _HISTORY_LABELS and (_historical(doc, e) or (joined and previous[1]))
            negated = _negated(doc, e) or _listed_after(doc, last, e)
            last = (e, negated)
            if historical and joined and not previous[1] and e.label_ == previous[0].label_ == "IMAGING":
                # "CT and bone scan both equivocal": the finding reported after the second scan is of both.
                out[previous[2]] = replace(out[previous[2]], historical=True)
            out.append(Entity(e.start_char, e.end_char, e.text, e.label_, e.kb_id_, negated, historical))
            if e.label_ in _HISTORY_LABELS or e.label_ == "PRIOR_THERAPY":
                previous = (e, historical or e.label_ == "PRIOR_THERAPY", len(out) - 1)
        return tuple(out)

    def extract(self, text: str) -> list:
        """Entities in order (recent texts are remembered; Entity is immutable)."""
        return list(self._cache.get(text, self._extract))

    def concepts(self, text: str, negated: bool = False) -> set:
        """Concept ids in the text with the broader concepts they imply; negated mentions only when asked
        (a recommendation that says "Do not use PET-CT" is about PET-CT; a question "not on PET" is not)."""
        return self.lexicon.closure(e.value for e in self.extract(text)
                                    if e.label != REC_ID_LABEL and (negated or not e.negated))


def _negated(doc: Doc, span: Span) -> bool:
    # "unless they have a very poor prognosis": an exception clause reaches a little further.
    for tok in reversed(doc[max(0, span.start - _UNLESS_WINDOW): span.start]):
        if tok.lower_ in _CLAUSE_BREAK:
            break
        if tok.lower_ == "unless":
            return True
    before = [t.lower_ for t in doc[max(0, span.start - _NEGATION_WINDOW): span.start]]
    for i in range(len(before) - 1, -1, -1):
        if before[i] in _CLAUSE_BREAK:
            break
        if before[i] in _NEGATION_CUES or tuple(before[i:i + 2]) in _PRE_NEGATION_PAIRS or before[i] == "r/o":
            return not (_EFFECT_VERBS | _USE_VERBS) & set(before[i + 1:])
        if before[i] == "over" and _chosen_over(doc, span.start - len(before) + i):
            return True
        if tuple(before[i:i + 2]) in _DONE_CHECKS and span.start - len(before) + i > 0 and \
                doc[span.start - len(before) + i - 1].lower_ in _PERFECT:
            return True
    after = [t.lower_ for t in doc[span.end: span.end + _POST_REACH]]
    while after and after[0] in _POST_FILLERS:     # "causes have been looked for and excluded"
        after.pop(0)
    return bool(after and after[0] in _POST_NEGATION and (after[0] != "ruled" or after[1:2] == ["out"]))


def _chosen_over(doc: Doc, over: int) -> bool:
    """'over' at this token follows a choice in the same clause ("has chosen chemo over BSC")."""
    for tok in reversed(doc[max(0, over - 6): over]):
        if tok.lower_ in _CLAUSE_BREAK:
            return False
        if tok.lower_ in _CHOICE_VERBS:
            return True
    return False


def _listed_after(doc: Doc, last, span: Span) -> bool:
    """An item of a list whose first item a cue before it negates ("we've excluded anaemia, thyroid, low mood"):
    the same kind of concept right after it, standing alone up to the next comma ("no anaemia, TFTs normal" and
    "no brain mets, liver mets present" are not)."""
    if last is None or not last[1] or last[0].label_ != span.label_:
        return False
    between = [t.lower_ for t in doc[last[0].end: span.start]]
    if not between or len(between) > 2 or not set(between) <= _LIST_JOINS:
        return False
    return span.end == len(doc) or doc[span.end].lower_ in _LIST_JOINS | _SENTENCE_END | {"-", "–", "—"}


def _joined(doc: Doc, first: Span, span: Span) -> bool:
    """The span is joined to the one before it ("surgery and then WBRT", "AC + docetaxel", "CT and bone
    scan")."""
    between = [t.lower_ for t in doc[first.end: span.start]]
    if len(between) <= 3 and all(w in _COORDINATION for w in between):
        return True
    # "had resection of the single met followed by WBRT": what followed it in the same sentence.
    return (between[-2:] == ["followed", "by"] or between[-2:] == ["and", "then"]) and len(between) <= 8 and not (
        set(between) & _SENTENCE_END)


def _historical(doc: Doc, span: Span) -> bool:
    """A history cue ends shortly before the concept: at most three other words in between, or any number
    of words that only qualify the treatment ("had 6 cycles of first-line epirubicin-based chemo"); or the
    treatment is said to be over just after it ("chemo now complete")."""
    cues = _PAST_CONDITION_CUES if span.label_ == "OUT_OF_SCOPE" else _HISTORY_CUES
    others, end = 0, span.start
    while end > 0 and span.start - end <= _HISTORY_REACH:
        head = [t.lower_ for t in doc[max(0, end - 4): end]]
        if any(_cue_ends(head, cue) for cue in cues):
            return True
        if span.label_ in ("DRUG", "IMAGING") and head[-1:] == ["on"] and not _ABOUT_WORDS & (
                {t.lower_ for t in doc[max(0, end - 4): end - 1]} - _PATIENT_WORDS):
            return True     # "ER+ MBC on anastrozole", not "guidance on anastrozole"
        tok = doc[end - 1]
        if tok.lower_ in _CLAUSE_BREAK and not _infix(doc, tok):
            break
        if not (_infix(doc, tok) or tok.like_num or tok.lower_ in _TREATMENT_QUALIFIERS):
            others += 1
            if others > _HISTORY_WINDOW:
                break
        end -= 1
    if span.label_ in _HISTORY_LABELS and _DATED_AFTER.match(doc.text, span.end_char):
        return True
    after = [t.lower_ for t in doc[span.end: span.end + 3]]
    if span.label_ == "IMAGING" and after[:1] == ["of"]:
        # "plain film of the humerus shows a lytic lesion": what was scanned, then its finding.
        scanned = [t.lower_ for t in doc[span.end: span.end + _SCANNED_REACH]]
        scanned = scanned[:next((i for i, w in enumerate(scanned) if w in _CLAUSE_BREAK), len(scanned))]
        if set(scanned) & _FINDING_AFTER - {"show", "was", "were", "came", "report", "reports"}:
            return True
    for w in after:
        if w in _HISTORY_AFTER or (span.label_ == "IMAGING" and w in _FINDING_AFTER) or (
                span.label_ == "THERAPY" and w in _CARE_AFTER):
            return True
        if w in _CLAUSE_BREAK or w not in _OVER_FILLERS:
            return False
    return False


def _cue_ends(head: list, cue: list) -> bool:
    """The words before a concept end with a history cue, and not as part of "look after" (who looks
    after her symptom control asks about care, it does not say she had it)."""
    n = len(cue)
    return n <= len(head) and head[-n:] == cue and not (cue == ["after"] and head[-2:-1] and
                                                         head[-2] in _LOOK_WORDS)


def _infix(doc: Doc, tok) -> bool:
    """A hyphen inside a word ("first-line") joins it; only a free-standing dash breaks a clause."""
    return tok.text == "-" and tok.i > 0 and not doc[tok.i - 1].whitespace_ and not tok.whitespace_


def without_spans(text: str, entities) -> str:
    """The text with these entities' spans cut out (right to left, so the offsets stay valid)."""
    for e in sorted(entities, key=lambda e: -e.start):
        text = text[: e.start] + text[e.end:]
    return text


def affirmed_concepts(lexicon: Lexicon, entities: list) -> set:
    return lexicon.closure(e.value for e in entities if e.label != REC_ID_LABEL and not e.negated)



@lru_cache(maxsize=1)
def default_extractor() -> EntityExtractor:
    return EntityExtractor()
