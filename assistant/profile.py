"""The patient profile a conversation builds up, and which recommendations apply to that patient.

A profile is plain data (Rasa slots): single-valued attributes (sex, menopausal status, ER and HER2
status, line of therapy, age group) and lists (prior therapies, metastatic sites). It decides which
recommendations apply -- it reranks and drives clarification -- and is never added to the search words.
A recommendation's conditions are read from its own text through the lexicon ("postmenopausal women",
"not previously treated with tamoxifen"), so the applicability table is derived, not hand-written.
"""

from __future__ import annotations

from dataclasses import dataclass

PROFILE_SLOTS = ("sex", "age_group", "menopausal_status", "er_status", "her2_status", "prior_therapies",
                 "metastatic_sites", "line_of_therapy", "clinical_status")
MATCH_BONUS = 0.12      # per applicability group in which the record names the patient's fact
CONFLICT_FACTOR = 0.35  # the record is written for another patient group, history or line
UNMET_FACTOR = 0.80     # the record requires a treatment history the patient is not known to have
DONE_FACTOR = 0.7       # the record asks for care the patient has had (an MDT's assessment, CDT)


@dataclass(frozen=True)
class Applicability:
    """How one recommendation relates to the patient: groups that match, conflict or stay open."""
    matched: tuple
    conflicting: tuple
    open: tuple
    unmet: tuple = ()
    done: bool = False        # asks for care the patient has had: past, but not ruled out

    @property
    def factor(self) -> float:
        if self.conflicting:
            return CONFLICT_FACTOR
        return (1.0 + MATCH_BONUS * len(self.matched)) * UNMET_FACTOR ** len(self.unmet) * \
            (DONE_FACTOR if self.done else 1.0)


class ProfileRules:
    """Profile attributes, mutually exclusive facts and applicability groups (from the dialogue YAML)."""

    def __init__(self, data: dict, lexicon) -> None:
        self.lexicon = lexicon
        self.attributes = data["attributes"]
        self.multi = {a for a, spec in self.attributes.items() if spec.get("multi")}
        self.attribute_of = {c: a for a, spec in self.attributes.items() for c in spec["concepts"]}
        self.exclusive: dict = {}
        for a, b in data["exclusive"]:
            self.exclusive.setdefault(a, set()).add(b)
            self.exclusive.setdefault(b, set()).add(a)
        self.groups = {g: set(cs) for g, cs in data["applicability_groups"].items()}
        self.age = data["age_menopause"]
        self.history_of = data.get("history_of", {})
        self.no_history_of = data.get("no_history_of", {})
        self.progressed_on = data.get("progressed_on", {})
        self.progression_facts = frozenset(self.progressed_on)
        self.unsuitable_for = {fact: frozenset([t] if isinstance(t, str) else t)
                               for fact, t in data.get("unsuitable_for", {}).items()}
        self.history_treatment = {prior: treatment for treatment, prior in self.history_of.items()}
        self.preconditions = set(data.get("precondition_groups", []))
        self.defaults = set(data.get("defaults", []))
        self.one_off = frozenset(data.get("one_off_treatments", []))
        self.care_given = frozenset(data.get("care_given", []))
        self.early_disease = frozenset(data.get("early_disease_history", []))

    # ------------------------------------------------------------------ profile
    def facts_of(self, concepts, order=()) -> dict:
        """Profile facts named by a message's affirmed concepts (only the most specific of a chain:
        'progressed on tamoxifen', not also 'prior tamoxifen'). Where two values of a single attribute
        are named ("premenopausal or perimenopausal"), the first in `order` (the message's) is kept."""
        facts: dict = {}
        named = [c for c in concepts if c in self.attribute_of]
        # A list keeps the most specific of its own chain ("progressed on tamoxifen", not also "prior
        # tamoxifen"); a site implied by a fact of another list ("visceral crisis") is still a site.
        implied, implied_in_list = set(), set()
        for c in named:
            # (not the concept itself, which an inference may give back: progressed on trastuzumab ->
            # trastuzumab + progression -> progressed on trastuzumab)
            broader = self.lexicon.closure(self.lexicon.concepts[c].broader) - {c}
            implied |= broader
            implied_in_list |= {b for b in broader if self.attribute_of.get(b) == self.attribute_of[c]}
        rank = {c: i for i, c in enumerate(order)}
        for c in sorted(named, key=lambda c: (rank.get(c, len(rank)), c)):
            if c in implied and self.attribute_of[c] not in self.multi:
                continue
            attr = self.attribute_of[c]
            if attr in self.multi:
                if c not in implied_in_list:
                    facts.setdefault(attr, []).append(c)
            elif attr not in facts:
                facts[attr] = c
        return facts

    def history(self, concept: str, negated: bool = False) -> str | None:
        """The prior-therapy concept for a treatment named as history: the nearest mapped concept up the
        broader chain (docetaxel -> taxane -> chemotherapy -> prior_chemotherapy); for one the patient
        never had, the matching 'no prior' concept."""
        mapping = self.no_history_of if negated else self.history_of
        frontier = [concept]
        seen = set()
        while frontier:
            for c in frontier:
                if c in mapping:
                    return mapping[c]
            seen.update(frontier)
            frontier = [b for c in frontier for b in self.lexicon.concepts[c].broader if b not in seen]
        return None

    def menopause_from_age(self, age: int | None, sex: str | None) -> str | None:
        if age is None or sex == "male":
            return None
        if age >= self.age["postmenopausal_from"]:
            return "postmenopausal"
        if age < self.age["premenopausal_below"]:
            return "premenopausal"
        return None

    def merge(self, profile: dict, facts: dict) -> dict:
        """The profile with a turn's facts: a restated attribute replaces its value, a fact that cannot
        hold together with an earlier one removes it ('actually he's a man' drops 'postmenopausal')."""
        out = {s: profile.get(s) for s in PROFILE_SLOTS}
        for attr in self.multi:
            out[attr] = list(out[attr] or [])
        new = {c for v in facts.values() for c in (v if isinstance(v, list) else [v]) if c in self.attribute_of}
        new_closure = self.lexicon.closure(new)
        for attr, value in list(out.items()):
            if attr not in self.attributes or not value:
                continue
            values = value if isinstance(value, list) else [value]
            kept = [v for v in values if not (self.lexicon.closure([v]) & self._excluded_by(new_closure))]
            out[attr] = kept if isinstance(value, list) else (kept[0] if kept else None)
        for attr, value in facts.items():
            if attr in self.multi:
                merged = list(out.get(attr) or [])
                for v in value:
                    if v not in merged:
                        merged.append(v)
                out[attr] = merged
            else:
                out[attr] = value
        if out.get("menopausal_status") and not out.get("sex"):
            out["sex"] = "female"
        for attr in self.multi:
            out[attr] = out[attr] or None
        return out

    def _excluded_by(self, concepts: set) -> set:
        return {x for c in concepts for x in self.exclusive.get(c, ())}

    def closure(self, profile: dict) -> set:
        values = []
        for attr in self.attributes:
            v = profile.get(attr)
            values += v if isinstance(v, list) else ([v] if v else [])
        return self.lexicon.closure(values)

    # ------------------------------------------------------------------ applicability
    def conditions(self, record_concepts, negated=(), offered=()) -> dict:
        """A record's conditions per applicability group: the group's concepts its text names, those it
        names as exceptions ("unless they have a very poor prognosis") under the key (group, 'not'), and
        the treatments it offers under 'offers' (not for a patient whose disease progressed on them)."""
        named, unless = set(record_concepts), set(negated)
        out = {g: frozenset(named & cs) for g, cs in self.groups.items() if named & cs}
        if offered:
            out["offers"] = frozenset(offered)
        # An exception counts where the record sets no condition of its own in that group (1.3.10's "whichever
        # was not used as second-line treatment" is part of a sequence, not an exception).
        out.update({(g, "not"): frozenset(unless & cs) for g, cs in self.groups.items()
                    if unless & cs and g not in out})
        return out

    def history_facts(self, treatments) -> set:
        """The prior-therapy facts for treatments the patient has had ('docetaxel' -> prior chemotherapy)."""
        return {self.history_of[c] for c in self.lexicon.closure(treatments) if c in self.history_of}

    def _already_given(self, offered: frozenset, patient: set, kinds: frozenset | None = None) -> bool:
        """Every treatment offered is a one-off treatment (or, with `kinds`, a care step) the patient has had."""
        kinds = self.one_off if kinds is None else kinds
        return bool(offered) and offered <= kinds and all(self.history_of.get(t) in patient for t in offered)

    def progressed_treatments(self, facts) -> set:
        """The treatments the patient's disease progressed on ('progressed_on_ai' -> aromatase inhibitor)."""
        return {self.progressed_on[c] for c in facts if c in self.progressed_on}

    def applicability(self, conditions: dict, patient: set) -> Applicability:
        matched, conflicting, open_ = [], [], []
        done = self._already_given(conditions.get("offers", frozenset()), patient, self.care_given)
        excluded = self._excluded_by(patient)
        progressed = self.progressed_treatments(patient)
        progressed |= {t for c in patient if c in self.unsuitable_for for t in self.unsuitable_for[c]}
        # Offered as first-line treatment, but the patient has had it already: past that decision.
        # Not when that history was treatment of early disease, finished without relapse on it ("adjuvant tam
        # finished 10 yrs ago"; not "relapsed while on adjuvant letrozole"), and no later line is stated.
        early = self.early_disease & patient and not patient & ({"second_line", "third_line"} | self.progression_facts)
        if conditions.get("line_of_therapy") == frozenset({"first_line"}) and not early:
            progressed |= {t for c, t in self.history_treatment.items() if c in patient}
        for group, options in conditions.items():
            if group == "offers":
                if options & progressed or self._already_given(options, patient):
                    conflicting.append("treatment_history")
                continue
            if isinstance(group, tuple):
                if options & patient:
                    conflicting.append(group[0])
                continue
            if options & patient:
                matched.append(group)
            elif all(self.lexicon.closure([o]) & excluded for o in options):
                conflicting.append(group)
            else:
                open_.append(group)
        unmet = tuple(g for g in open_ if g in self.preconditions and not conditions[g] & self.defaults)
        return Applicability(tuple(matched), tuple(conflicting), tuple(open_), unmet, done)
