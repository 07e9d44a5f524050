"""Show how the core handles a conversation: concepts, merged query, component scores per candidate."""

from __future__ import annotations

import sys

from assistant import config
from assistant.dialogue import Assistant
from assistant.retrieval import Retriever


def main(turns: list) -> None:
    config.offline()
    retriever = Retriever.load()
    bot = Assistant(retriever)
    state: dict = {}
    for turn in turns:
        reply = bot.respond(turn, state)
        state = reply.state
        print(f"> {turn}\n  kind={reply.kind} query={reply.query!r}")
        print("  entities:", [(e.text, e.value) for e in retriever.extractor.extract(turn)])
        if reply.query:
            res = retriever.search(reply.query, focus=turn if reply.query != turn else None, abstain=False)
            for c in res.candidates:
                print(f"    {c.id:7s} fused={c.score:.3f} dense={c.dense:.3f} bm25={c.bm25:.3f} "
                      f"concept={c.concept:.3f}")
        ids = [a["id"] for a in (reply.payload or {}).get("answers", [])]
        print("  answers:", ids, (reply.payload or {}).get("reason"))


if __name__ == "__main__":
    main(sys.argv[1:])
