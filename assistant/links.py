"""Links to a recommendation on the NICE website, shared by every channel (web chat, Slack, Teams).

NICE's chapter pages anchor their headings by a slug of the heading text (no stable per-paragraph
anchors), so a link points at the heading of the part that holds the recommendation: its subsection
when it has one, else its section. Research recommendations live on their own chapter page.
Standard library only: imported by both environments.
"""

from __future__ import annotations

import re

BASE = "https://www.nice.org.uk/guidance/cg81/chapter/"
RECOMMENDATIONS_PAGE = BASE + "Recommendations"
RESEARCH_PAGE = BASE + "Recommendations-for-research"


def slug(heading: str) -> str:
    """NICE-style heading anchor: lower case, runs of anything but letters and digits become one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def nice_url(answer_item: dict) -> str:
    """The NICE page (and heading anchor) for one `answers` item of the guideline_answer payload."""
    research = answer_item.get("kind") == "research"
    page = RESEARCH_PAGE if research else RECOMMENDATIONS_PAGE
    heading = answer_item.get("subsection") or ("" if research else answer_item.get("section_title") or "")
    anchor = slug(heading)
    return f"{page}#{anchor}" if anchor else page
