"""NICE links (assistant/links.py), shared by the web chat and the Slack/Teams channels."""

from __future__ import annotations

import pytest

from assistant import corpus, links

pytestmark = pytest.mark.portable


def test_each_recommendation_links_to_its_heading_on_the_nice_page():
    records = {r["id"]: r for r in corpus.load()}
    assert links.nice_url(records["1.3.4"]) == \
        "https://www.nice.org.uk/guidance/cg81/chapter/Recommendations#endocrine-therapy"
    assert links.nice_url(records["1.2.1"]) == \
        "https://www.nice.org.uk/guidance/cg81/chapter/Recommendations#providing-information-and-support-for-decision-making"
    assert links.nice_url(records["RR1"]).startswith(
        "https://www.nice.org.uk/guidance/cg81/chapter/Recommendations-for-research#")
    for record in records.values():
        url = links.nice_url(record)
        assert url.startswith(links.BASE) and " " not in url and url.count("#") == 1


def test_an_answer_item_without_headings_still_gets_the_page():
    assert links.nice_url({"id": "1.1.1", "kind": "recommendation"}) == links.RECOMMENDATIONS_PAGE
    assert links.nice_url({"id": "RR1", "kind": "research", "subsection": None}) == links.RESEARCH_PAGE
    assert links.slug("Biological response modifiers (adjuvant trastuzumab)") == \
        "biological-response-modifiers-adjuvant-trastuzumab"
