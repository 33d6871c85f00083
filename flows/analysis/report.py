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

The page, its style sheet and its script are files in `templates/`, rendered by
Jinja2 with autoescaping: this module only works out what they show (the view
model below, the histogram's geometry, the map SVG made fit to inline). Nothing
here escapes by hand.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

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
#: Rows shown in the longer tables of a scope.
_TOP_DROPOFFS, _TOP_PARTNERS, _TOP_EDGES = 12, 12, 20


# --------------------------------------------------------------------------- formatting
# Registered as Jinja filters; the summary's free-form figures use `_num` in Python too.
def _num(value: float) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3g}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


def _duration(seconds: float | None) -> str:
    """`human_duration`, with a dash where there is no time to show."""
    return "–" if seconds is None else human_duration(seconds)


def _score(score: float) -> str:
    return f"{score:,.0f}×" if score >= 100 else f"{score:.1f}×"


def _fixed(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def _clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return min(max(value, low), high)


# --------------------------------------------------------------------------- view model
@dataclass(frozen=True)
class KpiView:
    """A scope's KPIs; times are None where no case has one (shown as a dash)."""

    started: int
    completed: int
    goal_reached: int
    completion_rate: float
    abandoned: int
    open: int
    events: int
    loops: int
    channel_switches: int
    ttg_mean: float | None
    ttg_p50: float | None
    ttg_p90: float | None
    case_p50: float | None
    sentiment: float | None
    sentiment_cases: int

    @property
    def _per(self) -> int:
        return self.started or 1  # an empty scope divides by one, not zero

    @property
    def abandoned_share(self) -> float:
        return self.abandoned / self._per

    @property
    def open_share(self) -> float:
        return self.open / self._per

    @property
    def events_per_case(self) -> float:
        return self.events / self._per

    @property
    def loops_per_case(self) -> float:
        return self.loops / self._per

    @property
    def switches_per_case(self) -> float:
        return self.channel_switches / self._per


@dataclass(frozen=True)
class MapView:
    """The map of a scope, or why there is none."""

    state: Literal["empty", "missing", "failed", "drawn"]
    svg: Markup | None
    error: str
    note: str  # what the picture leaves out; "" when it shows every transition
    transitions: int


@dataclass(frozen=True)
class HistBar:
    x: float
    y: float
    width: float
    height: float
    low: float  # the bin's durations, in seconds
    high: float
    count: int


@dataclass(frozen=True)
class HistLine:
    """A position on an axis with its label: a grid line, a tick or a quantile."""

    at: float
    label: str


@dataclass(frozen=True)
class HistMark:
    name: str  # p50, p90
    seconds: float
    x: float
    label_x: float
    anchor_end: bool  # near the right edge the label goes left of the line


@dataclass(frozen=True)
class Histogram:
    """Geometry of a log-binned duration histogram, in the SVG's user units."""

    width: int
    height: int
    left: int
    right_x: int  # right end of the plot
    top: int
    baseline: int  # y of the time axis
    centre_x: float
    grid: list[HistLine]
    bars: list[HistBar]
    ticks: list[HistLine]
    marks: list[HistMark]


@dataclass(frozen=True)
class DropOff:
    point: str
    cases: int
    share: float
    of_visits: float


@dataclass(frozen=True)
class DropOffs:
    rows: list[DropOff]
    total: int
    more: int  # contact points not shown


@dataclass(frozen=True)
class Partner:
    name: str
    cases: int
    goal_reached: int
    goal_rate: float


@dataclass(frozen=True)
class Partners:
    rows: list[Partner]
    total: int
    more: int  # partners not shown, and their cases
    more_cases: int


@dataclass(frozen=True)
class Pain:
    kind: str  # contact_point or edge
    where: str
    score: float
    visits: int
    reasons: list[str]


@dataclass(frozen=True)
class Transition:
    source: str
    target: str
    moves: int
    cases: int
    goal_rate: float
    p50: float | None  # None on start and end edges, which take no time
    p90: float | None
    channel_switches: int


@dataclass(frozen=True)
class ScopeView:
    name: str
    slug: str
    is_all: bool
    kpis: KpiView
    map: MapView
    histogram: Histogram | None
    goal_cases: int
    dropoffs: DropOffs
    partners: Partners
    pains: list[Pain]
    transitions: list[Transition]
    transition_count: int


@dataclass(frozen=True)
class Accuracy:
    label: str
    rate: float
    ours: bool


@dataclass(frozen=True)
class SummaryView:
    figures: list[tuple[str, str]]
    accuracy: list[Accuracy]
    others: list[tuple[str, str]]


# --------------------------------------------------------------------------- scopes
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


def _kpi_view(cmap: ContactMap, scope: str, kpis: dict[str, Any]) -> KpiView:
    k = cmap.scopes[scope].kpis
    ttg: dict[str, float] = kpis["time_to_goal_seconds"]
    reached = int(kpis["goal_reached"])
    return KpiView(
        started=kpis["started"],
        completed=kpis["completed"],
        goal_reached=reached,
        completion_rate=kpis["completion_rate"],
        abandoned=kpis["abandoned"],
        open=kpis.get("open", 0),
        events=kpis["events"],
        loops=kpis["loops"],
        channel_switches=kpis["channel_switches"],
        ttg_mean=ttg["mean"] if reached else None,
        ttg_p50=ttg["p50"] if reached else None,
        ttg_p90=ttg["p90"] if reached else None,
        case_p50=k.case_durations.quantile(0.5) if k.case_durations.count else None,
        sentiment=kpis["sentiment"],
        sentiment_cases=k.sentiment_cases,
    )


def _dropoffs(cmap: ContactMap, scope: str, kpis: dict[str, Any]) -> DropOffs:
    drops: dict[str, int] = kpis["drop_off_by_last_contact_point"]
    nodes = cmap.scopes[scope].nodes
    total = sum(drops.values())
    rows = []
    for point, n in list(drops.items())[:_TOP_DROPOFFS]:
        visits = nodes[point].visits if point in nodes else 0
        rows.append(DropOff(point, n, n / total, n / visits if visits else 0.0))
    return DropOffs(rows, total, max(len(drops) - _TOP_DROPOFFS, 0))


def _partners(kpis: dict[str, Any]) -> Partners:
    partners: dict[str, dict[str, Any]] = kpis["by_partner"]
    ranked = sorted(partners.items(), key=lambda kv: (-kv[1]["cases"], kv[0]))
    rows = [Partner(name, p["cases"], p["goal_reached"], p["goal_rate"]) for name, p in ranked]
    hidden = rows[_TOP_PARTNERS:]
    return Partners(rows[:_TOP_PARTNERS], len(rows), len(hidden), sum(p.cases for p in hidden))


def _transitions(cmap: ContactMap, scope: str) -> list[Transition]:
    edges = sorted(cmap.scopes[scope].edges.items(), key=lambda kv: (-kv[1].count, kv[0]))
    label = {START: "(start)", END: "(end)"}
    rows = []
    for key, edge in edges[:_TOP_EDGES]:
        source, target = split_edge(key)
        timed = START not in (source, target) and END not in (source, target)
        rows.append(
            Transition(
                source=label.get(source, source),
                target=label.get(target, target),
                moves=edge.count,
                cases=edge.cases,
                goal_rate=edge.goal_cases / edge.cases if edge.cases else 0.0,
                p50=edge.durations.quantile(0.5) if timed else None,
                p90=edge.durations.quantile(0.9) if timed else None,
                channel_switches=edge.channel_switches,
            )
        )
    return rows


def _scope_view(cmap: ContactMap, scope: str, slug: str, program: str | None) -> ScopeView:
    kpis = cmap.kpis(scope)
    s = cmap.scopes[scope]
    return ScopeView(
        name=scope,
        slug=slug,
        is_all=scope == ALL,
        kpis=_kpi_view(cmap, scope, kpis),
        map=_map_view(cmap, scope, slug, program),
        histogram=histogram(s.kpis.time_to_goal),
        goal_cases=s.kpis.time_to_goal.count,
        dropoffs=_dropoffs(cmap, scope, kpis),
        partners=_partners(kpis),
        pains=[
            Pain(p["kind"], p["where"], p["score"], p["visits"], list(p["reasons"]))
            for p in cmap.pain_points(scope)
        ],
        transitions=_transitions(cmap, scope),
        transition_count=len(s.edges),
    )


def _summary_view(summary: Mapping[str, object]) -> SummaryView:
    """The run's figures: the known ones labelled, then any other scalar, in its order.

    `summary.json` is free-form, so its values are turned into text here, once.
    """
    shown: set[str] = set()
    figures = []
    for key, label in _FIGURES:
        value = summary.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            figures.append((label, f"{value:,.1f} s" if key == "seconds" else _num(value)))
            shown.add(key)
    accuracy = []
    for key, label in _ACCURACIES:
        rate = summary.get(key)
        if isinstance(rate, int | float):
            accuracy.append(Accuracy(label, rate, ours=key == "next_step_accuracy"))
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
        elif isinstance(value, dict) and value:
            numbers = [
                (str(k), v)
                for k, v in value.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            ]
            if len(numbers) == len(value):
                others.append((name, " · ".join(f"{k} {_num(v)}" for k, v in numbers)))
    return SummaryView(figures, accuracy, others)


# --------------------------------------------------------------------------- the map
_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_NS = "http://www.w3.org/1999/xlink"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
#: How SVG inlined in HTML spells the namespaces Graphviz uses.
_PREFIXES = {_SVG_NS: "", _XLINK_NS: "xlink:", _XML_NS: "xml:"}
#: Nothing that could run or restyle the page gets in, should Graphviz ever write it.
_DROPPED = {"script", "style", "foreignObject"}
#: A paint or clip reference inside one attribute's value (not a pattern over markup).
_URL_REF = re.compile(r"url\(#([^)]*)\)")


def _html_name(name: str) -> str | None:
    """`{uri}local` as inline SVG in HTML writes it; None for a namespace we do not inline."""
    if not name.startswith("{"):
        return name
    uri, _, local = name[1:].partition("}")
    prefix = _PREFIXES.get(uri)
    return None if prefix is None else prefix + local


def _points(length: str | None) -> float | None:
    """A length in points (Graphviz writes `697pt`), else None."""
    if length is None or not length.endswith("pt"):
        return None
    try:
        return float(length[:-2])
    except ValueError:
        return None


def _inline_attribute(name: str, value: str, prefix: str) -> str | None:
    """An attribute of the map with its ids prefixed; None for one that is dropped
    (an event handler, or a link out of the map)."""
    if name.lower().startswith("on"):
        return None
    if name == "id":
        return f"{prefix}-{value}"
    if name in {"href", "xlink:href"}:
        return f"#{prefix}-{value[1:]}" if value.startswith("#") else None
    return _URL_REF.sub(lambda m: f"url(#{prefix}-{m[1]})", value)


def inline_svg(svg: bytes, prefix: str, label: str) -> Markup:
    """Graphviz SVG made safe to inline in the page, where several maps live together.

    Parsed (which drops the XML prolog, doctype and comments), every id and every
    reference to one prefixed so the maps' `node1`s do not collide, links kept only
    within the map, and the size moved to CSS so it scales to the page. Serialising
    the tree escapes every text and attribute, so the result is marked safe.
    Raises GraphvizFailed when the drawing is not an SVG document.
    """
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as exc:
        raise GraphvizFailed(f"unreadable SVG ({exc})") from exc
    if _html_name(root.tag) != "svg":
        raise GraphvizFailed(f"not an SVG drawing: <{root.tag}>")
    for parent in list(root.iter()):
        for child in list(parent):
            tag = _html_name(child.tag)
            if tag is None or tag in _DROPPED:
                parent.remove(child)
    for element in root.iter():
        element.tag = _html_name(element.tag) or element.tag
        attrib: dict[str, str] = {}
        for key, value in element.attrib.items():
            name = _html_name(key)
            kept = None if name is None else _inline_attribute(name, value, prefix)
            if name is not None and kept is not None:
                attrib[name] = kept
        element.attrib.clear()
        element.attrib.update(attrib)
    width, height = _points(root.get("width")), _points(root.get("height"))
    top: dict[str, str] = {"role": "img", "aria-label": label, "class": "map-svg"}
    if width is not None and height is not None:
        top |= {"data-width": f"{width:.0f}", "style": f"max-width:{width:.0f}pt"}
        del root.attrib["width"], root.attrib["height"]
    top |= root.attrib
    top |= {"xmlns": _SVG_NS, "xmlns:xlink": _XLINK_NS}
    root.attrib.clear()
    root.attrib.update(top)
    return Markup(ET.tostring(root, encoding="unicode").strip())


def _map_view(cmap: ContactMap, scope: str, slug: str, program: str | None) -> MapView:
    s = cmap.scopes[scope]
    if not s.edges:
        return MapView("empty", None, "", "", 0)
    chosen = drawn_edges(cmap, scope)
    note, count = chosen.note(), len(s.edges)
    if program is None:
        return MapView("missing", None, "", note, count)
    try:
        svg = render(map_dot(cmap, scope), "svg", program)
    except GraphvizFailed as exc:
        return MapView("failed", None, str(exc), note, count)
    return MapView(
        "drawn", inline_svg(svg, f"m-{slug}", f"contact-point map of {scope}"), "", note, count
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


def histogram(durations: Durations) -> Histogram | None:
    """Bars of a log-binned duration histogram, with p50 and p90; None without durations."""
    if not durations.count or not durations.bins:
        return None
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

    grid = [HistLine(top + plot_h * (1 - frac), _num(round(most * frac))) for frac in (0.5, 1.0)]
    bars = []
    for b in range(first, last + 1):
        count = durations.bins.get(b, 0)
        if count:
            h = plot_h * count / most
            low, high = _bin_edges(b)
            x = left + (b - first) * bar_w
            bars.append(HistBar(x + 0.5, top + plot_h - h, max(bar_w - 1, 1), h, low, high, count))
    ticks = [
        HistLine(x_of(_coord(seconds)), label)
        for seconds, label in _TICKS
        if first <= _coord(seconds) <= last + 1
    ]
    marks = []
    for q, name in ((0.5, "p50"), (0.9, "p90")):
        value = durations.quantile(q)
        x = x_of(_coord(value) if value > 0 else first + 0.5)
        near_right = x > width - right - 90
        marks.append(HistMark(name, value, x, x - 3 if near_right else x + 3, near_right))
    return Histogram(
        width=width,
        height=height,
        left=left,
        right_x=width - right,
        top=top,
        baseline=top + plot_h,
        centre_x=left + plot_w / 2,
        grid=grid,
        bars=bars,
        ticks=ticks,
        marks=marks,
    )


# --------------------------------------------------------------------------- rendering
#: `flows/analysis/templates/`, found through the package so an installed wheel works too.
_LOADER = PackageLoader("flows.analysis", "templates")


@cache
def _environment() -> Environment:
    """One environment for the process: templates are compiled once, not per report."""
    env = Environment(
        loader=_LOADER,
        # Every template here writes HTML: escape in any of them, whatever its name.
        autoescape=select_autoescape(("html", "htm", "xml", "j2"), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters |= {
        "num": _num,
        "pct": _pct,
        "duration": _duration,
        "score": _score,
        "fixed": _fixed,
        "clamp": _clamp,
        "goal_colour": goal_colour,
    }
    env.globals["inline_asset"] = _inline_asset
    return env


@cache
def _inline_asset(name: str) -> Markup:
    """Our style sheet or script, verbatim: not read as a template, so `{#` or `{{` in
    CSS or JS never turns into template syntax. Trusted (it ships with the package), it
    only has to keep from closing the element it is inlined in."""
    source = _LOADER.get_source(_environment(), name)[0]
    closing = "</style" if name.endswith(".css") else "</script"
    if closing in source.lower():
        raise ValueError(f"{name} contains {closing}>, which would end the inlined element")
    return Markup(source)


def render_report(map: ContactMap, summary: Mapping[str, object], title: str) -> str:
    """The report as one HTML document (a string)."""
    cmap = map
    order = _scope_order(cmap)
    slugs = _slugs(order)
    try:
        program: str | None = find_graphviz()
    except GraphvizMissing:
        program = None
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            cases=cmap.scopes[ALL].kpis.cases if ALL in cmap.scopes else None,
            summary=_summary_view(summary),
            scopes=[_scope_view(cmap, s, slugs[s], program) for s in order],
        )
    )


def write_report(
    map: ContactMap, summary: Mapping[str, object] | None, out: Path, title: str
) -> Path:
    """Write the report; `out` is the HTML file, or a folder to hold `report.html`.

    Returns the path written.
    """
    out = Path(out)
    path = out if out.suffix.lower() in {".html", ".htm"} else out / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(map, summary or {}, title), encoding="utf-8")
    return path
