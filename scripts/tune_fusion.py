"""Grid search of the fusion weights and thresholds on a gold set (documented in docs/design.md, Retrieval).

Prints the best settings; it changes nothing. Check any choice against the held-out set afterwards.
"""

from __future__ import annotations

import argparse
import itertools

from assistant import config, corpus, evaluate, retrieval
from assistant.dialogue import Assistant


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gold", default="tests/gold/cg81_gold.yaml")
    args = parser.parse_args()
    config.offline()
    items = evaluate.load_gold(args.gold)
    by_id = {r["id"]: r for r in corpus.load()}
    bot = Assistant(retrieval.Retriever.load())
    rows = []
    grid = itertools.product([0.4, 0.5, 0.6, 0.7], [0.1, 0.15, 0.2, 0.25], [15.0])
    for wd, wb, floor in grid:
        wc = round(1 - wd - wb, 2)
        if wc < 0.1:
            continue
        retrieval.WEIGHTS.update(dense=wd, bm25=wb, concept=wc)
        retrieval.BM25_FLOOR = floor
        bot.abstain = False
        res = evaluate.evaluate(items, lambda t: evaluate.run_core(bot, t), by_id, progress=False)
        m = res["metrics"]
        rows.append((m["top1"], m["mrr"], m["recall_at_3"], wd, wb, wc, floor))
        print(f"dense={wd} bm25={wb} concept={wc} floor={floor}: top1={m['top1']} "
              f"mrr={m['mrr']} r@3={m['recall_at_3']}", flush=True)
    rows.sort(reverse=True)
    print("best:", rows[:5])


if __name__ == "__main__":
    main()
