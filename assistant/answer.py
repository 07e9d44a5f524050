"""Answer formatting: the text a clinician reads and the machine-readable payload integrations read.

Recommendation text is always copied from the corpus record; nothing here composes clinical advice.
"""

from __future__ import annotations

GUIDELINE = "CG81"
EMPTY_MESSAGE = ("Please type a question about advanced breast cancer care, or a recommendation number "
                 "such as 1.3.4. Type 'help' to see what I can do.")
# Also domain.yml's utter_service_unavailable (a test keeps the two identical).
SERVICE_UNAVAILABLE = ("Sorry, I can't reach the guideline service right now. Please try again in a moment "
                       "— no recommendation has been given.")
ABSTAIN_REASONS = {
    "oos_dosing": "doses or dosing schedules",
    "oos_duration": "treatment duration",
    "oos_prognosis": "prognosis or survival estimates",
    "oos_cost": "costs",
    "oos_other_topic": "that topic",
    "oos_biomarker_testing": "biomarker, tumour marker or genomic testing",
    "oos_bone_health": "bone health or osteoporosis",
    "oos_uncovered_complication": "that complication",
    "oos_side_effects": "side effects",
    "oos_other_cancer": "other cancers",
    "oos_uncovered_drug": "that medicine",
    "oos_early_disease": "early breast cancer or screening",
    "oos_pregnancy": "pregnancy or fertility",
    "oos_chitchat": "that topic",
    "oos_injection": "instructions to change how I work: I only quote the guideline",
}
RESET_TEXT = ("Starting afresh: I have forgotten the previous patient. What would you like to ask about the "
              "new patient?")



def too_long(limit: int) -> str:
    return (f"That message is too long for me (more than {limit} characters). Please ask one question at "
            "a time in a sentence or two.")


def answer_item(record: dict, score) -> dict:
    item = {"id": record["id"], "text": record["text"], "year": record["year"], "section": record["section"],
            "section_title": record["section_title"], "subsection": record.get("subsection"),
            "strength": record["strength"], "kind": record["kind"]}
    item["score"] = None if score is None else round(float(score), 4)
    return item


def payload(answers: list, clarification: dict | None = None, reason: str | None = None,
            notes: list | None = None) -> dict:
    out = {"type": "guideline_answer", "guideline": GUIDELINE, "abstained": not answers and not clarification,
           "answers": answers, "clarification": clarification}
    if reason:
        out["reason"] = reason
    if notes:
        out["notes"] = list(notes)
    return out


def menopause_note(status: str, age: int) -> str:
    return (f"I took the patient as {status} from the age given ({age}); tell me if that is wrong and I will "
            "answer for the right patient group.")


def year_note(rec_id: str, year: int, tags: dict | None = None) -> str:
    meaning = (tags or {}).get(str(year))
    return f"Recommendation {rec_id} is marked [{year}]." + (f" {meaning}" if meaning else "")


def abstention_payload(reason: str | None) -> dict:
    return payload([], reason=reason or "no_answer")


def _heading(item: dict) -> str:
    label = "research recommendation" if item["kind"] == "research" else "recommendation"
    where = f"section {item['section']} {item['section_title']}" if item["kind"] != "research" \
        else "Recommendations for research"
    if item.get("subsection"):
        where += f" › {item['subsection']}"
    return f"NICE CG81 {label} {item['id']} [{item['year']}] — {where}"


def render(item: dict) -> str:
    return f"{_heading(item)}\n{item['text']}"


def answer_text(answers: list, missing: list | None = None, notes: list | None = None) -> str:
    parts = list(notes or []) + [render(answers[0])]
    if len(answers) > 1:
        parts.append("Also relevant: " + ", ".join(a["id"] for a in answers[1:]) + " (ask for one by its number)")
    if missing:
        parts.append(unknown_ids_text(missing))
    return "\n\n".join(parts)


def clarification_text(clarification: dict, answers: list) -> str:
    lines = [clarification["question"], "", "Meanwhile, the candidate recommendations are:"]
    lines += [f"\n{render(a)}" for a in answers]
    return "\n".join(lines)


def list_text(records: list) -> str:
    lines = [f"{len(records)} NICE CG81 recommendation{'s' if len(records) != 1 else ''}:"]
    lines += [f"\n{render(answer_item(r, None))}" for r in records]
    return "\n".join(lines)


def update_text(year: int, records: list, updates: dict) -> str:
    """The guideline's own update note and tag meaning for a year, then the recommendations with it."""
    lines = [f"{len(records)} NICE CG81 recommendation{'s' if len(records) != 1 else ''} marked [{year}]."]
    for part in (updates.get("notes", {}).get(str(year)), updates.get("tags", {}).get(str(year))):
        if part:
            lines.append(f"From the guideline's update information: \"{part}\"")
    if len(records) > 8:
        # A long list: headings only, each recommendation's full text is one look-up away.
        lines += [""] + [f"{_heading(answer_item(r, None))}" for r in records]
        lines.append("\nAsk for any of them by its number to see its full text.")
    else:
        lines += [f"\n{render(answer_item(r, None))}" for r in records]
    return "\n".join(lines)


def _no_fit(ids: list) -> str:
    """The one wording of 'nothing fits her', with or without a research recommendation after it."""
    return (f"NICE CG81 has no recommendation that fits this patient: the closest ({', '.join(ids)}) are written "
            "for other patient groups or treatment histories")


def not_for_patient_text(ids: list) -> str:
    return (f"{_no_fit(ids)}, so I won't quote them as the answer. Ask for any of them by number to read it, or "
            "tell me more about the patient.")


def research_only_note(ids: list) -> str:
    return f"{_no_fit(ids)}. The guideline names her situation as a question for research:"


def unknown_ids_text(ids: list) -> str:
    return (f"CG81 has no recommendation numbered {', '.join(ids)}. Its recommendations are 1.1.1–1.1.8, "
            "1.2.1–1.2.4, 1.3.1–1.3.12, 1.4.1, 1.5.1–1.5.21 and research recommendations RR1–RR6.")


def abstention_text(reason: str | None) -> str:
    topic = "this"
    if reason == "no_research_on_topic":
        return ("NICE CG81 has no research recommendation on that topic. Ask for 'the research "
                "recommendations' to see all six (RR1-RR6).")
    if reason and reason.startswith("out_of_scope:"):
        names = [ABSTAIN_REASONS[i] for i in reason.split(":", 1)[1].split(",") if i in ABSTAIN_REASONS]
        if names:
            topic = " or ".join(dict.fromkeys(names))
    return (f"NICE CG81 has no recommendation on {topic}, so I can't answer from the guideline. "
            "I only quote CG81 (advanced breast cancer: diagnosis and treatment); please check the BNF, the "
            "product information or local protocols, or rephrase your question if it is about CG81's topics.")
