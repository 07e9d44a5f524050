"""Show how the core handles a conversation: the parsed query, the state, what was searched, and the
component scores and applicability factor of each candidate. Usage: explain.py "turn 1" "turn 2" ..."""

from __future__ import annotations

import sys

from assistant import config
from assistant.dialogue import Assistant, clean
from assistant.retrieval import Retriever


def main(turns: list) -> None:
    config.offline()
    bot = Assistant(Retriever.load())
    state: dict = {}
    for turn in turns:
        q = bot.analyzer.analyse(clean(turn))
        print(f"> {turn}")
        print(f"  facts={q.facts} roles={q.roles}")
        print(f"  asked={sorted(q.asked)} described={sorted(q.described)} question={q.question!r}")
        print(f"  reset={q.reset} update={q.update} elliptical={q.elliptical} oos={q.oos}")
        reply = bot.respond(turn, state)
        state = reply.state
        print(f"  kind={reply.kind} searched={reply.query!r}")
        print(f"  state={ {k: v for k, v in state.items() if v} }")
        if reply.trace:
            t = reply.trace
            print(f"  followup={t['followup']} carried={t['carried']}")
            print("  weights=" + ", ".join(f"{c}:{w}" for c, w in sorted(t["weights"].items())))
            for cid, score, dense, bm25, concept, factor in t["candidates"]:
                print(f"    {cid:7s} fused={score:.3f} dense={dense:.3f} bm25={bm25:.3f} concept={concept:.3f} "
                      f"x{factor:.2f}")
        ids = [a["id"] for a in (reply.payload or {}).get("answers", [])]
        print("  answers:", ids, (reply.payload or {}).get("reason"))


if __name__ == "__main__":
    main(sys.argv[1:])
