"""The journey report: one self-contained HTML file that opens from disk.

For every scope of a `ContactMap` (`all`, each journey or intent) it shows the
contact-point map (inline SVG drawn by Graphviz, see `flows.analysis.pictures`), the
journey KPIs, a time-to-goal histogram (inline SVG from the `Durations` bins),
drop-off by last contact point, partners, the busiest transitions and the
ranked pain points with their reasons; above them the figures of the run or
replay (`summary.json`: cases, events, next-step accuracy against the
baselines...). No external script, font, style sheet or image: everything is in
the file, and a few lines of inline script only switch between scopes (without
script every scope is shown, one after the other, as in print). Maps are
aggregates: the report holds no personal data.
"""

from __future__ import annotations

import html
import math
import re
from datetime import UTC, datetime
from pathlib import Path

from flows.analysis.pictures import (
    GraphvizFailed,
    GraphvizMissing,
    drawn_edges,
    find_graphviz,
    goal_colour,
    human_duration,
    map_dot,
    render,
)
from operators.contact_map import ALL, END, START, ContactMap, Durations, split_edge

_BINS_PER_DOUBLING = 4  # as operators.contact_map.Durations

#: Summary figures with a label of their own, in this order; anything else scalar follows.
_FIGURES = (
    ("cases", "cases"),
    ("customers", "customers"),
    ("anonymous_visitors", "anonymous visitors"),
    ("events", "events"),
    ("contact_points", "contact points"),
    ("journeys", "journeys"),
    ("seconds", "elapsed"),
    ("events_per_second", "events per second"),
)
_ACCURACIES = (
    ("next_step_accuracy", "Wayfinder (ours)"),
    ("markov1_accuracy", "first-order Markov"),
    ("ngram_accuracy", "back-off n-gram (≤ 4)"),
)
#: Summary entries that are not figures (file paths of the outputs).
_SKIP = {"outputs", "paths", "files"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3g}"


def _slugs(names: list[str]) -> dict[str, str]:
    """A distinct id-safe slug per scope name."""
    slugs: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "scope"
        slug, n = base, 1
        while slug in used:
            n += 1
            slug = f"{base}-{n}"
        used.add(slug)
        slugs[name] = slug
    return slugs


def _scope_order(cmap: ContactMap) -> list[str]:
    """`all` first, then the busiest scopes."""
    return sorted(cmap.scopes, key=lambda s: (s != ALL, -cmap.scopes[s].kpis.cases, s))


# --------------------------------------------------------------------------- the map
def _inline_svg(svg: bytes, prefix: str, label: str) -> str:
    """Graphviz SVG made fit for inlining: no prolog, ids made unique, scales to the page."""
    text = svg.decode("utf-8", errors="replace")
    start = text.find("<svg")
    text = re.sub(r"<!--.*?-->", "", text[start:], flags=re.S) if start >= 0 else text
    text = re.sub(r'\bid="', f'id="{prefix}-', text)
    text = re.sub(r'(xlink:)?href="#', f"\\g<0>{prefix}-", text)
    match = re.match(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', text)
    if match:
        width = float(match.group(1))
        text = (
            f'<svg role="img" aria-label="{_e(label)}" class="map-svg" data-width="{width:.0f}" '
            f'style="max-width:{width:.0f}pt"' + text[match.end() :]
        )
    return text.strip()


def _map_figure(cmap: ContactMap, scope: str, slug: str, program: str | None) -> str:
    s = cmap.scopes[scope]
    if not s.edges:
        body = '<p class="muted">No transitions in this scope yet.</p>'
    elif program is None:
        body = (
            '<p class="warn">The map could not be drawn: no Graphviz found '
            "(<code>pip install graphviz-pure</code>).</p>"
        )
    else:
        try:
            svg = render(map_dot(cmap, scope), "svg", program)
            body = _inline_svg(svg, f"m-{slug}", f"contact-point map of {scope}")
        except GraphvizFailed as exc:
            body = f'<p class="warn">The map could not be drawn: {_e(exc)}</p>'
    chosen = drawn_edges(cmap, scope) if s.edges else None
    note = (chosen.note() if chosen else "") or f"All {len(s.edges):,} transitions are shown."
    legend = (
        '<div class="map-tools"><span class="legend">goal rate <span class="scale"></span> '
        '<span class="small">0 → 100%</span> · line width = moves (log scale) · '
        '<span class="painkey">red border, dashed, ⚠</span> = pain point · '
        "hover for details</span>"
        '<button type="button" class="zoom" hidden>Actual size</button></div>'
    )
    return (
        f'<figure class="map" id="map-{slug}">{legend}<div class="map-view">{body}</div>'
        f"<figcaption>Contact points (boxes, with visits) and the transitions customers took "
        f"(arrows: width by number of moves, colour by the share of their cases that reached "
        f"the goal; labels: moves · median time). {_e(note)}</figcaption></figure>"
    )


# --------------------------------------------------------------------------- histogram
def _bin_edges(b: int) -> tuple[float, float]:
    low = 2 ** (b / _BINS_PER_DOUBLING) - 1.0
    high = 2 ** ((b + 1) / _BINS_PER_DOUBLING) - 1.0
    return (0.0 if b == 0 else low), high


def _coord(seconds: float) -> float:
    """Position of a duration on the bins' log axis (in bins)."""
    return math.log2(max(seconds, 0.0) + 1.0) * _BINS_PER_DOUBLING


_TICKS = (
    (1, "1 s"),
    (10, "10 s"),
    (60, "1 min"),
    (600, "10 min"),
    (3600, "1 h"),
    (6 * 3600, "6 h"),
    (86400, "1 d"),
    (7 * 86400, "1 w"),
    (30 * 86400, "30 d"),
    (365 * 86400, "1 y"),
)


def histogram_svg(durations: Durations, element_id: str, caption: str) -> str:
    """Bars of a log-binned duration histogram as inline SVG, with p50 and p90 marked."""
    if not durations.count or not durations.bins:
        return f'<p class="muted" id="{_e(element_id)}">No case reached the goal yet.</p>'
    first, last = min(durations.bins), max(durations.bins)
    first = max(first - 1, 0)
    last += 1
    n = last - first + 1
    width, height, left, right, top, bottom = 640, 190, 44, 12, 22, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    most = max(durations.bins.values())
    bar_w = plot_w / n

    def x_of(coord: float) -> float:
        return left + (coord - first) / n * plot_w

    parts = [
        f'<svg id="{_e(element_id)}" class="hist" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(caption)}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
        'class="axis"/>',
    ]
    for frac in (0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="ylab">{_num(round(most * frac))}</text>'
        )
    parts.append(f'<text x="{left - 6}" y="{top + plot_h + 4}" class="ylab">0</text>')
    for b in range(first, last + 1):
        count = durations.bins.get(b, 0)
        if not count:
            continue
        h = plot_h * count / most
        low, high = _bin_edges(b)
        x = left + (b - first) * bar_w
        parts.append(
            f'<rect class="bar" x="{x + 0.5:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}"><title>'
            f"{_e(human_duration(low))} – {_e(human_duration(high))}: {count:,} cases"
            "</title></rect>"
        )
    for seconds, label in _TICKS:
        c = _coord(seconds)
        if first <= c <= last + 1:
            x = x_of(c)
            parts.append(
                f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" '
                f'class="axis"/><text x="{x:.1f}" y="{top + plot_h + 16}" class="xlab">'
                f"{label}</text>"
            )
    for q, name in ((0.5, "p50"), (0.9, "p90")):
        value = durations.quantile(q)
        x = x_of(_coord(value) if value > 0 else first + 0.5)
        near_right = x > width - right - 90
        anchor = ' text-anchor="end"' if near_right else ""
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + plot_h}" class="q"/>'
            f'<text x="{x - 3 if near_right else x + 3:.1f}" y="{top - 8}" class="qlab"'
            f"{anchor}>{name} "
            f"{_e(human_duration(value))}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" class="xtitle">'
        "time from first contact to goal (log scale)</text></svg>"
    )
    return "".join(parts)


# --------------------------------------------------------------------------- tables
def _bar(share: float, colour: str = "#4c78a8") -> str:
    share = min(max(share, 0.0), 1.0)
    return (
        f'<span class="bar-cell"><span class="bar-fill" style="width:{share * 100:.1f}%;'
        f'background:{colour}"></span></span>'
    )


def _score(score: float) -> str:
    return f"{score:,.0f}×" if score >= 100 else f"{score:.1f}×"


def _kpi_cards(kpis: dict, abandon_rate: float) -> str:
    ttg = kpis["time_to_goal_seconds"]
    cards = [
        ("started", _num(kpis["started"]), "cases"),
        ("reached the goal", _pct(kpis["completion_rate"]), f"{kpis['goal_reached']:,} cases"),
        ("median time to goal", human_duration(ttg["p50"]) if kpis["goal_reached"] else "–", ""),
        ("abandoned", _pct(abandon_rate), f"{kpis['abandoned']:,} cases"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="card-label">{_e(label)}</div>'
            f'<div class="card-value">{_e(value)}</div><div class="card-sub">{_e(sub)}</div></div>'
            for label, value, sub in cards
        )
        + "</div>"
    )


def _kpi_table(cmap: ContactMap, scope: str, slug: str, kpis: dict) -> str:
    k = cmap.scopes[scope].kpis
    started = kpis["started"] or 1
    ttg = kpis["time_to_goal_seconds"]
    reached = kpis["goal_reached"]
    sentiment = kpis["sentiment"]
    rows = [
        (
            "Started",
            _num(kpis["started"]),
            "cases in this scope: finished, or still open when the input ended",
        ),
        ("Completed", _num(kpis["completed"]), "journeys that ended completed"),
        ("Goal reached", _num(reached), ""),
        ("Completion rate", _pct(kpis["completion_rate"]), "goal reached / started"),
        (
            "Abandoned",
            f"{kpis['abandoned']:,} ({kpis['abandoned'] / started:.1%})",
            "journeys that stalled out",
        ),
        (
            "Open at the end",
            f"{kpis.get('open', 0):,} ({kpis.get('open', 0) / started:.1%})",
            "still in flight when a bounded input ended (a run, a replay)",
        ),
        ("Events", _num(kpis["events"]), f"{kpis['events'] / started:.1f} per case"),
        (
            "Time to goal, mean",
            human_duration(ttg["mean"]) if reached else "–",
            "first contact to goal, cases that reached it",
        ),
        ("Time to goal, p50", human_duration(ttg["p50"]) if reached else "–", "median"),
        ("Time to goal, p90", human_duration(ttg["p90"]) if reached else "–", ""),
        (
            "Case duration, p50",
            human_duration(k.case_durations.quantile(0.5)) if k.case_durations.count else "–",
            "every case, goal or not",
        ),
        (
            "Loops",
            f"{kpis['loops']:,} ({kpis['loops'] / started:.2f} per case)",
            "a contact point revisited in the same case",
        ),
        (
            "Channel switches",
            f"{kpis['channel_switches']:,} ({kpis['channel_switches'] / started:.2f} per case)",
            "a step on another channel than the one before",
        ),
        (
            "Sentiment",
            "–" if sentiment is None else f"{sentiment:+.2f}",
            "mean, −1 (negative) to +1 (positive)"
            + ("" if sentiment is None else f", {k.sentiment_cases:,} cases with text"),
        ),
    ]
    body = "".join(
        f"<tr><th scope='row'>{_e(name)}</th><td class='num'>{_e(value)}</td>"
        f"<td class='muted'>{_e(note)}</td></tr>"
        for name, value, note in rows
    )
    return (
        f'<table class="kpis" id="kpis-{slug}"><caption>Journey KPIs</caption>'
        f"<tbody>{body}</tbody></table>"
    )


def _dropoff_table(cmap: ContactMap, scope: str, slug: str, kpis: dict, top: int = 12) -> str:
    drops: dict[str, int] = kpis["drop_off_by_last_contact_point"]
    if not drops:
        return (
            f'<div id="dropoff-{slug}"><h4>Drop-off by last contact point</h4>'
            '<p class="muted">No case ended without reaching the goal.</p></div>'
        )
    nodes = cmap.scopes[scope].nodes
    total = sum(drops.values())
    rows = []
    for point, n in list(drops.items())[:top]:
        visits = nodes[point].visits if point in nodes else 0
        rows.append(
            f"<tr><td>{_e(point)}</td><td class='num'>{n:,}</td>"
            f"<td class='num'>{n / total:.1%}</td><td>{_bar(n / total, '#c0392b')}</td>"
            f"<td class='num'>{(n / visits if visits else 0):.1%}</td></tr>"
        )
    more = len(drops) - top
    tail = f'<p class="muted">and {more:,} more contact points.</p>' if more > 0 else ""
    return (
        f'<div id="dropoff-{slug}"><table class="data"><caption>Drop-off by last contact '
        f"point ({total:,} cases ended without the goal)</caption><thead><tr>"
        "<th>last contact point</th><th class='num'>cases</th><th class='num'>share</th><th></th>"
        "<th class='num'>of its visits</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{tail}</div>"
    )


def _partner_table(slug: str, kpis: dict, top: int = 12) -> str:
    partners: dict[str, dict] = kpis["by_partner"]
    if not partners:
        return (
            f'<div id="partners-{slug}"><h4>By partner</h4>'
            '<p class="muted">No partner took part in these cases.</p></div>'
        )
    ranked = sorted(partners.items(), key=lambda kv: (-kv[1]["cases"], kv[0]))
    rows = "".join(
        f"<tr><td>{_e(partner) if partner else '<i>(blank)</i>'}</td>"
        f"<td class='num'>{p['cases']:,}</td>"
        f"<td class='num'>{p['goal_reached']:,}</td><td class='num'>{p['goal_rate']:.1%}</td>"
        f"<td>{_bar(p['goal_rate'], goal_colour(p['goal_rate']))}</td></tr>"
        for partner, p in ranked[:top]
    )
    more = len(ranked) - top
    tail = (
        f'<p class="muted small">and {more:,} more partners with '
        f"{sum(p['cases'] for _name, p in ranked[top:]):,} cases.</p>"
        if more > 0
        else ""
    )
    return (
        f'<div id="partners-{slug}"><table class="data"><caption>By partner '
        f"({len(ranked):,})</caption><thead>"
        "<tr><th>partner</th><th class='num'>cases</th><th class='num'>goal reached</th>"
        "<th class='num'>goal rate</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{tail}</div>"
    )


def _pain_table(cmap: ContactMap, scope: str, slug: str) -> str:
    pains = cmap.pain_points(scope)
    if not pains:
        return (
            f'<div id="pain-{slug}" class="pain"><h3>Pain points</h3><p class="muted">No contact '
            "point or transition does markedly worse than this scope's average.</p></div>"
        )
    rows = "".join(
        f"<tr><td class='num'>{rank}</td>"
        f"<td>{'contact point' if p['kind'] == 'contact_point' else 'transition'}</td>"
        f"<td class='where'>{_e(p['where'].replace(' -> ', ' → '))}</td>"
        f"<td class='num'>{_score(p['score'])}</td><td class='num'>{p['visits']:,}</td>"
        f"<td><ul>{''.join(f'<li>{_e(r)}</li>' for r in p['reasons'])}</ul></td></tr>"
        for rank, p in enumerate(pains, start=1)
    )
    return (
        f'<div id="pain-{slug}" class="pain"><table class="data"><caption>Pain points, worst '
        "first (score: how many times worse than the scope's average)</caption><thead><tr>"
        "<th class='num'>#</th><th>kind</th><th>where</th><th class='num'>score</th>"
        "<th class='num'>visits</th><th>why</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _edges_table(cmap: ContactMap, scope: str, slug: str, top: int = 20) -> str:
    edges = sorted(cmap.scopes[scope].edges.items(), key=lambda kv: (-kv[1].count, kv[0]))
    rows = []
    for key, edge in edges[:top]:
        source, target = split_edge(key)
        rate = edge.goal_cases / edge.cases if edge.cases else 0.0
        timed = START not in (source, target) and END not in (source, target)
        p50 = human_duration(edge.durations.quantile(0.5)) if timed else "–"
        p90 = human_duration(edge.durations.quantile(0.9)) if timed else "–"
        label = {START: "(start)", END: "(end)"}
        rows.append(
            f"<tr><td>{_e(label.get(source, source))}</td><td>{_e(label.get(target, target))}</td>"
            f"<td class='num'>{edge.count:,}</td><td class='num'>{edge.cases:,}</td>"
            f"<td class='num'><span class='dot' style='background:{goal_colour(rate)}'></span>"
            f"{rate:.0%}</td><td class='num'>{p50}</td><td class='num'>{p90}</td>"
            f"<td class='num'>{edge.channel_switches:,}</td></tr>"
        )
    return (
        f'<details id="edges-{slug}"><summary>Busiest transitions (top {min(top, len(edges))} of '
        f"{len(edges):,})</summary><table class='data'><thead><tr><th>from</th><th>to</th>"
        "<th class='num'>moves</th><th class='num'>cases</th><th class='num'>goal rate</th>"
        "<th class='num'>p50</th><th class='num'>p90</th><th class='num'>channel switches</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
    )


# --------------------------------------------------------------------------- sections
def _summary_section(summary: dict) -> str:
    shown: set[str] = set()
    figures = []
    for key, label in _FIGURES:
        value = summary.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            text = f"{value:,.1f} s" if key == "seconds" else _num(value)
            figures.append((label, text))
            shown.add(key)
    accuracy = [
        (label, summary[key])
        for key, label in _ACCURACIES
        if isinstance(summary.get(key), int | float)
    ]
    shown.update(key for key, _label in _ACCURACIES)
    others = []
    for key, value in summary.items():
        if key in shown or key in _SKIP:
            continue
        name = key.replace("_", " ")
        if isinstance(value, bool):
            others.append((name, str(value).lower()))
        elif isinstance(value, int | float):
            others.append((name, _num(value)))
        elif isinstance(value, str) and len(value) <= 80:
            others.append((name, value))
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values())
        ):
            others.append((name, " · ".join(f"{k} {_num(v)}" for k, v in value.items())))
    parts = ['<section id="report-summary" class="summary"><h2>Summary</h2>']
    if figures:
        parts.append(
            '<div class="cards">'
            + "".join(
                f'<div class="card"><div class="card-label">{_e(label)}</div>'
                f'<div class="card-value">{_e(value)}</div></div>'
                for label, value in figures
            )
            + "</div>"
        )
    if accuracy:
        rows = "".join(
            f"<tr{' class=ours' if i == 0 and label.startswith('Wayfinder') else ''}>"
            f"<th scope='row'>{_e(label)}</th><td class='num'>{value:.1%}</td>"
            f"<td class='wide'>{_bar(value, '#2f6f9f')}</td></tr>"
            for i, (label, value) in enumerate(accuracy)
        )
        parts.append(
            '<table class="data accuracy" id="accuracy"><caption>Next-step prediction accuracy '
            "(prequential: each step predicted before any model learns it)</caption>"
            f"<tbody>{rows}</tbody></table>"
        )
    if others:
        rows = "".join(
            f"<tr><th scope='row'>{_e(name)}</th><td>{_e(value)}</td></tr>"
            for name, value in others
        )
        parts.append(f'<table class="data other"><tbody>{rows}</tbody></table>')
    if not (figures or accuracy or others):
        parts.append('<p class="muted">No summary figures.</p>')
    parts.append("</section>")
    return "".join(parts)


def _overview(cmap: ContactMap, order: list[str], slugs: dict[str, str]) -> str:
    rows = []
    for scope in order:
        kpis = cmap.kpis(scope)
        ttg = kpis["time_to_goal_seconds"]
        started = kpis["started"] or 1
        pains = len(cmap.pain_points(scope))
        rows.append(
            f"<tr><td><a href='#scope-{slugs[scope]}' data-scope='{slugs[scope]}'>"
            f"{_e(scope)}</a></td><td class='num'>{kpis['started']:,}</td>"
            f"<td class='num'>{kpis['completion_rate']:.1%}</td>"
            f"<td>{_bar(kpis['completion_rate'], goal_colour(kpis['completion_rate']))}</td>"
            f"<td class='num'>{human_duration(ttg['p50']) if kpis['goal_reached'] else '–'}</td>"
            f"<td class='num'>{kpis['abandoned'] / started:.1%}</td>"
            f"<td class='num'>{kpis['loops'] / started:.2f}</td>"
            f"<td class='num'>{pains}</td></tr>"
        )
    return (
        '<section id="overview"><h2>Journeys at a glance</h2><table class="data">'
        "<thead><tr><th>scope</th><th class='num'>started</th><th class='num'>goal rate</th>"
        "<th></th><th class='num'>time to goal p50</th><th class='num'>abandoned</th>"
        "<th class='num'>loops per case</th><th class='num'>pain points</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _scope_section(cmap: ContactMap, scope: str, slug: str, program: str | None) -> str:
    kpis = cmap.kpis(scope)
    started = kpis["started"] or 1
    k = cmap.scopes[scope].kpis
    kind = "every journey together" if scope == ALL else "journey / intent"
    return (
        f'<section class="scope" id="scope-{slug}" data-scope="{slug}">'
        f'<h2><span class="kind">{_e(kind)}</span> {_e(scope)}</h2>'
        f"{_kpi_cards(kpis, kpis['abandoned'] / started)}"
        f"{_map_figure(cmap, scope, slug, program)}"
        '<div class="cols">'
        f'<div class="col">{_kpi_table(cmap, scope, slug, kpis)}</div>'
        f'<div class="col"><h4>Time to goal</h4>'
        f"{histogram_svg(k.time_to_goal, f'ttg-{slug}', f'time to goal in {scope}')}"
        f'<p class="muted small">{k.time_to_goal.count:,} cases reached the goal; '
        f"bars on a log scale of time, four per doubling.</p>"
        f"{_dropoff_table(cmap, scope, slug, kpis)}{_partner_table(slug, kpis)}</div></div>"
        f"{_pain_table(cmap, scope, slug)}{_edges_table(cmap, scope, slug)}</section>"
    )


_CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#d9e2ec;--soft:#f5f7fa;--accent:#2f6f9f;
--bad:#c0392b}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
sans-serif;color:var(--ink);background:#fff}
header{padding:20px 32px 12px;border-bottom:1px solid var(--line);background:var(--soft)}
header h1{margin:0 0 4px;font-size:22px}
header .meta{color:var(--muted);font-size:12px}
main{padding:8px 32px 40px;max-width:1500px;margin:0 auto}
h2{font-size:18px;margin:26px 0 10px;border-bottom:2px solid var(--line);padding-bottom:4px}
h2 .kind{font-size:12px;font-weight:normal;color:var(--muted);text-transform:uppercase;
letter-spacing:.05em;margin-right:6px}
h3,h4{font-size:14px;margin:16px 0 6px}
.muted{color:var(--muted)} .small{font-size:12px}
.warn{color:var(--bad);font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 14px}
.card{flex:1 1 150px;max-width:230px;border:1px solid var(--line);border-radius:8px;
padding:8px 12px;background:#fff}
.card-label{font-size:11px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card-value{font-size:22px;font-weight:650}
.card-sub{font-size:11px;color:var(--muted)}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px}
caption{text-align:left;font-weight:600;padding:4px 0 6px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);
border-bottom:2px solid var(--line)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kpis th{font-weight:500;white-space:nowrap}
table.data{width:100%}
td ul{margin:0;padding-left:16px}
td.where{font-weight:600}
tr.ours th,tr.ours td{font-weight:700}
td.wide{width:55%}
.bar-cell{display:inline-block;width:100%;min-width:60px;height:10px;background:var(--soft);
border-radius:5px;overflow:hidden;vertical-align:middle}
.bar-fill{display:block;height:100%;border-radius:5px}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:5px}
nav.scopes{position:sticky;top:0;z-index:2;background:#fff;padding:10px 0;
border-bottom:1px solid var(--line);display:flex;flex-wrap:wrap;gap:6px;align-items:center}
nav.scopes .label{color:var(--muted);font-size:12px;margin-right:4px}
nav.scopes a{padding:4px 12px;border:1px solid var(--line);border-radius:14px;
text-decoration:none;color:var(--ink);font-size:13px;background:var(--soft)}
nav.scopes a[aria-current="true"]{background:var(--accent);border-color:var(--accent);
color:#fff}
a{color:var(--accent)}
figure.map{margin:10px 0 16px;padding:10px;border:1px solid var(--line);border-radius:8px;
overflow-x:auto;background:#fff}
figure.map svg.map-svg{display:block;width:100%;height:auto;margin:0 auto}
figure.map.actual svg.map-svg{max-width:none!important}
.map-view{overflow-x:auto}
.map-tools{display:flex;justify-content:space-between;align-items:center;gap:10px;
font-size:12px;color:var(--muted);margin-bottom:6px}
.legend .scale{display:inline-block;width:90px;height:9px;border-radius:4px;
vertical-align:middle;background:linear-gradient(90deg,#d7301f,#f0a500,#1a9850)}
.legend .painkey{color:var(--bad);font-weight:600}
button.zoom{font:inherit;font-size:12px;padding:3px 10px;border:1px solid var(--line);
border-radius:12px;background:var(--soft);color:var(--ink);cursor:pointer}
figcaption{font-size:12px;color:var(--muted);margin-top:6px}
.cols{display:flex;flex-wrap:wrap;gap:28px}
.col{flex:1 1 440px;min-width:0}
svg.hist{width:100%;max-width:640px;height:auto;display:block}
svg.hist .bar{fill:#4c78a8} svg.hist .bar:hover{fill:#2f6f9f}
svg.hist .axis{stroke:#9aa5b1} svg.hist .grid{stroke:#e4e7eb}
svg.hist text{font-size:11px;fill:#52606d;font-family:inherit}
svg.hist .ylab{text-anchor:end} svg.hist .xlab,svg.hist .xtitle{text-anchor:middle}
svg.hist .q{stroke:#c0392b;stroke-dasharray:3 3}
svg.hist .qlab{fill:#c0392b;font-weight:600}
details{margin:8px 0 20px} summary{cursor:pointer;font-weight:600}
footer{color:var(--muted);font-size:12px;padding:16px 32px;border-top:1px solid var(--line)}
section.scope{scroll-margin-top:52px}
body.tabs section.scope{display:none}
body.tabs section.scope.active{display:block}
@media print{
 nav.scopes{display:none}
 body.tabs section.scope{display:block}
 section.scope{break-before:page}
 figure.map{break-inside:avoid;overflow:visible}
 button.zoom{display:none}
 figure.map.actual svg.map-svg{width:100%!important}
 table{break-inside:auto} tr{break-inside:avoid}
 details{display:block} details>summary{list-style:none}
 header{background:none}
 h3,h4,caption{break-after:avoid}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 main{padding:0 8px}
}
"""

# Scope tabs: show one scope at a time; without script every scope is shown.
_JS = """
(function () {
  var sections = document.querySelectorAll("section.scope");
  var links = document.querySelectorAll("a[data-scope]");
  function show(slug, scroll) {
    var found = false;
    sections.forEach(function (s) {
      var on = s.getAttribute("data-scope") === slug;
      s.classList.toggle("active", on);
      found = found || on;
    });
    if (!found && sections.length) { return show(sections[0].getAttribute("data-scope"), false); }
    document.querySelectorAll("nav.scopes a").forEach(function (a) {
      a.setAttribute("aria-current", a.getAttribute("data-scope") === slug ? "true" : "false");
    });
    if (scroll) { document.getElementById("scope-" + slug).scrollIntoView(); }
  }
  links.forEach(function (a) {
    a.addEventListener("click", function (ev) {
      ev.preventDefault();
      var slug = a.getAttribute("data-scope");
      history.replaceState(null, "", "#scope-" + slug);
      show(slug, a.closest("nav") === null);
    });
  });
  document.querySelectorAll("figure.map").forEach(function (fig) {
    var svg = fig.querySelector("svg.map-svg");
    var button = fig.querySelector("button.zoom");
    if (!svg || !button) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var actual = fig.classList.toggle("actual");
      svg.style.width = actual ? svg.getAttribute("data-width") + "pt" : "";
      button.textContent = actual ? "Fit to width" : "Actual size";
    });
  });
  document.body.classList.add("tabs");
  var hash = (location.hash || "").replace(/^#scope-/, "");
  show(hash || (sections.length ? sections[0].getAttribute("data-scope") : ""), false);
  document.body.setAttribute("data-ready", "1");
})();
"""


def render_report(map: ContactMap, summary: dict, title: str) -> str:
    """The report as one HTML document (a string)."""
    cmap = map
    order = _scope_order(cmap)
    slugs = _slugs(order)
    try:
        program: str | None = find_graphviz()
    except GraphvizMissing:
        program = None
    nav = "".join(f'<a href="#scope-{slugs[s]}" data-scope="{slugs[s]}">{_e(s)}</a>' for s in order)
    sections = "".join(_scope_section(cmap, s, slugs[s], program) for s in order)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cases = cmap.scopes[ALL].kpis.cases if ALL in cmap.scopes else None
    meta = f"{len(order)} scope{'s' if len(order) != 1 else ''}"
    if cases is not None:
        meta += f" · {cases:,} cases"
    body = (
        f'<header><h1 id="report-title">{_e(title)}</h1><div class="meta">Wayfinder journey '
        f"report · {meta} · generated {now} · aggregates only, no personal data</div></header>"
        f"<main>{_summary_section(summary)}"
        + (_overview(cmap, order, slugs) if order else "")
        + (
            f'<nav class="scopes" id="scope-nav"><span class="label">scope</span>{nav}</nav>'
            f'<div id="scopes">{sections}</div>'
            if order
            else '<p class="muted" id="scopes">The contact-point map is empty.</p>'
        )
        + "</main><footer>Contact-point map: nodes are contact points, edges the transitions "
        "customers actually took (directly-follows), learned from the event stream. Goal rate: "
        "share of the cases on an edge that reached the journey's goal. Times in human units "
        "(s, min, h, d).</footer>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}<script>{_JS}</script></body></html>\n"
    )


def write_report(map: ContactMap, summary: dict, out: Path, title: str) -> Path:
    """Write the report; `out` is the HTML file, or a folder to hold `report.html`.

    Returns the path written.
    """
    out = Path(out)
    path = out if out.suffix.lower() in {".html", ".htm"} else out / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(map, summary or {}, title), encoding="utf-8")
    return path
