"""A self-contained HTML evaluation report: metrics, accuracy by tag and by section, a reliability
diagram with the abstention threshold, the threshold sweep it was chosen from, the most frequent
confusions and every miss with its whole conversation. Inline CSS and SVG only: it opens offline."""

from __future__ import annotations

import html
from datetime import datetime, timezone

from assistant.evaluate import METRIC_NAMES, confusions, reliability, threshold_sweep

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2733;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d5dbe1}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d5dbe1;padding:.25rem .6rem;text-align:left}
th{background:#eef2f6}.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#5b6b7b}
.miss{border-left:4px solid #b42318;padding:.3rem .8rem;margin:.6rem 0;background:#fff6f5}
.miss ol{margin:.2rem 0 .2rem 1.2rem;padding:0}.grid{display:flex;flex-wrap:wrap;gap:2rem}
svg text{font-size:11px;fill:#1d2733}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _bars(title: str, rows: dict, width: int = 520) -> str:
    """Horizontal bars: share correct per group, with n."""
    bar_h, label_w = 18, 170
    height = bar_h * len(rows) + 30
    parts = [f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>']
    span = width - label_w - 90
    for i, (name, v) in enumerate(rows.items()):
        y = 10 + i * bar_h
        w = span * (v["correct"] or 0)
        colour = "#2f7d32" if v["correct"] >= 0.9 else "#b7791f" if v["correct"] >= 0.75 else "#b42318"
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{_e(name)}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 5}" fill="{colour}"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{v["correct"]:.2f} (n={v["n"]})</text>')
    parts.append("</svg>")
    return "".join(parts)


def _reliability_svg(rows: list, threshold: float) -> str:
    w, h, pad = 460, 300, 40
    inner_w, inner_h = w - 2 * pad, h - 2 * pad
    parts = [f'<svg role="img" aria-label="Reliability diagram" width="{w}" height="{h}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>Reliability diagram</title>',
             f'<rect x="{pad}" y="{pad}" width="{inner_w}" height="{inner_h}" fill="#f7f9fb" stroke="#d5dbe1"/>',
             f'<line x1="{pad}" y1="{pad + inner_h}" x2="{pad + inner_w}" y2="{pad}" stroke="#9aa6b2" '
             'stroke-dasharray="4 3"/>']
    bw = inner_w / max(len(rows), 1)
    for i, r in enumerate(rows):
        if r["correct"] is None:
            continue
        bh = inner_h * r["correct"]
        x = pad + i * bw
        parts.append(f'<rect x="{x + 2:.1f}" y="{pad + inner_h - bh:.1f}" width="{bw - 4:.1f}" height="{bh:.1f}" '
                     f'fill="#2b6cb0" opacity="0.85"/><text x="{x + bw / 2:.1f}" y="{pad + inner_h - bh - 3:.1f}" '
                     f'text-anchor="middle">n={r["n"]}</text>')
    tx = pad + inner_w * threshold
    parts.append(f'<line x1="{tx:.1f}" y1="{pad}" x2="{tx:.1f}" y2="{pad + inner_h}" stroke="#b42318" '
                 f'stroke-width="2"/><text x="{tx + 4:.1f}" y="{pad + 12}" fill="#b42318">abstain below '
                 f'{threshold}</text>')
    for k in range(0, 11, 2):
        v = k / 10
        parts.append(f'<text x="{pad + inner_w * v:.1f}" y="{h - pad + 14}" text-anchor="middle">{v:.1f}</text>'
                     f'<text x="{pad - 6}" y="{pad + inner_h - inner_h * v + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 6}" text-anchor="middle">fused score of the best candidate</text>'
                 f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">share answered '
                 'correctly</text></svg>')
    return "".join(parts)


def _table(headers: list, rows: list) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{"num" if isinstance(c, (int, float)) else ""}">{_e(c)}</td>'
                                    for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(result: dict, title: str, threshold: float, provenance: dict | None = None,
           baselines: dict | None = None) -> str:
    m = result["metrics"]
    items = result["items"]
    rel = reliability(items)
    sweep = threshold_sweep(items)
    misses = [r for r in items if not r["correct"]]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
           f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>',
           f"<h1>{_e(title)}</h1><p class=\"muted\">Generated {when}"]
    if provenance:
        out.append(" · " + " · ".join(f"{_e(k)}: {_e(v)}" for k, v in provenance.items()))
    out.append("</p><h2>Metrics</h2>")
    keys = ("items", "answerable", "out_of_scope", "multi_turn_items") + METRIC_NAMES
    out.append(_table(["metric", "value"], [[k, m.get(k)] for k in keys]))
    if baselines:
        out.append("<h3>Ranking only (no abstention), answerable items</h3>")
        out.append(_table(["retriever", "top-1", "recall@3", "MRR"],
                          [[n, b["top1"], b["recall_at_3"], b["mrr"]] for n, b in baselines.items()]))
    out.append('<h2>Accuracy</h2><div class="grid">')
    out.append(f"<figure><figcaption>By tag</figcaption>{_bars('Accuracy by tag', m['by_tag'])}</figure>")
    out.append(f"<figure><figcaption>By section of the expected recommendation</figcaption>"
               f"{_bars('Accuracy by section', m['by_section'])}</figure></div>")
    out.append("<h2>Reliability and the abstention threshold</h2>")
    out.append("<p>Each bar is the share of items whose best candidate (the answer given, or the one the "
               "assistant would have given) is right, by the fused score of that candidate. Out-of-scope items "
               "are never right. The assistant abstains below the red line; the sweep shows what other "
               "thresholds would do on this set.</p>")
    out.append(f'<div class="grid"><figure>{_reliability_svg(rel, threshold)}</figure><div>')
    out.append(_table(["threshold", "top-1", "abstention precision", "abstention recall"],
                      [[r["threshold"], r["top1"], r["abstention_precision"], r["abstention_recall"]] for r in sweep]))
    out.append("</div></div><h2>Most frequent confusions</h2>")
    out.append(_table(["expected", "predicted", "n"], [[c["expected"], c["predicted"], c["n"]]
                                                       for c in confusions(items)]) if misses else "<p>None.</p>")
    out.append(f"<h2>Misses ({len(misses)})</h2>")
    for r in misses:
        got = "abstained" + (f" ({r['reason']})" if r.get("reason") else "") if r["abstained"] \
            else ", ".join(r["predicted"][:3])
        turns = "".join(f"<li>{_e(t)}</li>" for t in r["turns"])
        out.append(f'<div class="miss"><strong>{_e(r["id"])}</strong> <span class="muted">'
                   f'{_e(", ".join(r["tags"]))}</span><ol>{turns}</ol>expected <strong>'
                   f'{_e(", ".join(r["expected"]) or "abstain")}</strong>, got <strong>{_e(got)}</strong></div>')
    out.append("</body></html>\n")
    return "".join(out)
