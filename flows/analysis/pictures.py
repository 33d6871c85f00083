"""Pictures of the contact-point map: Graphviz DOT, drawn as SVG and PNG.

One scope of a `ContactMap` (`all`, a journey or an intent) becomes a directed
graph: contact points are boxes sized by their visits, transitions are arrows
as wide as their volume (log scale) and coloured by the share of their cases
that reach the goal (red → amber → green, with a legend). Pain points (from
`ContactMap.pain_points`) get a red border and a warning mark; `__start__` and
`__end__` are small round nodes. Busy maps keep the edges that carry most of
the traffic and say in the picture what they hid.

The drawing is done by the `graphviz-pure` program (a self-contained Graphviz
`dot` installed into the virtual environment by the `graphviz-pure` wheel), or
by a system Graphviz `dot` when that is all there is.

    wayfinder map --map out/contact_map.json --scope money_transfer --out pictures
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from operators.contact_map import ALL, END, START, ContactMap, Edge, Scope, split_edge

GRAPHVIZ_PURE = "graphviz-pure"

#: Defaults for busy maps: keep the busiest edges that carry this share of the moves,
#: and never more than this many edges.
DEFAULT_COVERAGE = 0.95
DEFAULT_MAX_EDGES = 60

#: Goal-rate scale: red at 0 %, amber at 50 %, green at 100 %.
_RED, _AMBER, _GREEN = (0xD7, 0x30, 0x1F), (0xF0, 0xA5, 0x00), (0x1A, 0x98, 0x50)
PAIN_COLOUR = "#c0392b"
FONT = "Helvetica"
#: The mark on pain points. The PNG fonts that graphviz-pure ships have no ⚠, so PNGs use ▲.
SVG_MARK, PNG_MARK = "⚠", "▲"
_MIN_PEN, _MAX_PEN = 1.0, 9.0


class GraphvizMissing(RuntimeError):
    """Neither graphviz-pure nor a Graphviz `dot` can be found."""


class GraphvizFailed(RuntimeError):
    """Graphviz ran and refused the graph."""


# --------------------------------------------------------------------------- small helpers
def human_duration(seconds: float) -> str:
    """Seconds in the unit a person reads: 42 s, 5.5 min, 3 h, 2.1 d."""
    seconds = max(float(seconds), 0.0)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{seconds:.1f} s" if 0 < seconds < 10 else f"{seconds:.0f} s"


def goal_colour(rate: float) -> str:
    """A colour on the red → amber → green scale for a goal rate in [0, 1]."""
    rate = min(max(rate, 0.0), 1.0)
    low, high, t = (_RED, _AMBER, rate * 2) if rate <= 0.5 else (_AMBER, _GREEN, rate * 2 - 1)
    r, g, b = (round(a + (c - a) * t) for a, c in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def edge_goal_rate(edge: Edge) -> float:
    return edge.goal_cases / edge.cases if edge.cases else 0.0


def pen_width(count: int, biggest: int) -> float:
    """Edge width on a log scale of volume: 1 for a single move, 9 for the busiest edge."""
    if biggest <= 1:
        return _MIN_PEN
    share = math.log(max(count, 1)) / math.log(biggest)
    return round(_MIN_PEN + (_MAX_PEN - _MIN_PEN) * share, 2)


def file_stem(scope: str) -> str:
    """A scope name made safe for a file name (`map-<stem>.svg`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", scope).strip("._") or "scope"


def _quote(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _html(text: str) -> str:
    """Text for a DOT HTML-like label."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _wrap(name: str, width: int = 22, lines: int = 3) -> str:
    """A long contact-point name on a few short lines (the last one cut with …)."""
    wrapped = textwrap.wrap(name.replace("_", "_\u200b"), width) or [name]
    wrapped = [line.replace("\u200b", "") for line in wrapped]
    if len(wrapped) > lines:
        wrapped = [*wrapped[: lines - 1], wrapped[lines - 1][: width - 1] + "…"]
    return "\n".join(wrapped)


# --------------------------------------------------------------------------- choosing edges
@dataclass
class EdgeSelection:
    """Which edges of a scope are drawn, and what was left out."""

    kept: list[str]
    hidden: list[str]
    total_moves: int
    kept_moves: int
    hidden_nodes: list[str] = field(default_factory=list)
    rule: str = ""

    @property
    def hidden_moves(self) -> int:
        return self.total_moves - self.kept_moves

    def note(self) -> str:
        """What the picture does not show, in one line ('' when it shows everything)."""
        if not self.hidden:
            return ""
        share = self.hidden_moves / self.total_moves if self.total_moves else 0.0
        text = (
            f"Hidden: {len(self.hidden):,} of {len(self.hidden) + len(self.kept):,} transitions "
            f"({self.hidden_moves:,} moves, {share:.1%} of traffic)"
        )
        if self.hidden_nodes:
            text += f" and {len(self.hidden_nodes):,} contact points"
        return text + (f" — {self.rule}" if self.rule else "")


def select_edges(
    scope: Scope,
    *,
    min_count: int | None = None,
    coverage: float = DEFAULT_COVERAGE,
    max_edges: int = DEFAULT_MAX_EDGES,
    always: frozenset[str] = frozenset(),
) -> EdgeSelection:
    """The edges to draw, busiest first.

    With `min_count`, every edge with at least that many moves (up to `max_edges`);
    without it, the busiest edges until they carry `coverage` of all moves (up to
    `max_edges`). Edges in `always` (pain points) are kept while they pass `min_count`.
    """
    ranked = sorted(scope.edges.items(), key=lambda kv: (-kv[1].count, kv[0]))
    total = sum(edge.count for _key, edge in ranked)
    kept: list[str] = []
    moves = 0
    for key, edge in ranked:
        if len(kept) >= max_edges:
            break
        if min_count is not None:
            if edge.count < min_count:
                break
        elif total and moves / total >= coverage:
            break
        kept.append(key)
        moves += edge.count
    chosen = set(kept)
    for key, edge in ranked:
        if key in always and key not in chosen and edge.count >= (min_count or 0):
            kept.append(key)
            chosen.add(key)
            moves += edge.count
    hidden = [key for key, _edge in ranked if key not in chosen]
    drawn_nodes = {point for key in kept for point in split_edge(key)}
    hidden_nodes = sorted(point for point in scope.nodes if point not in drawn_nodes)
    if min_count is not None:
        rule = f"shown: edges with at least {min_count:,} moves"
    else:
        rule = f"shown: the busiest edges covering {coverage:.0%} of traffic"
    if len(kept) >= max_edges:
        rule += f", at most {max_edges}"
    if always:
        rule += ", and every pain point"
    return EdgeSelection(kept, hidden, total, moves, hidden_nodes, rule)


# --------------------------------------------------------------------------- DOT
def pain_marks(cmap: ContactMap, scope: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Pain points of the scope: {contact point: reasons}, {edge key: reasons}."""
    points: dict[str, list[str]] = {}
    edges: dict[str, list[str]] = {}
    by_arrow = {" -> ".join(split_edge(key)): key for key in cmap.scopes[scope].edges}
    for pain in cmap.pain_points(scope):
        if pain["kind"] == "contact_point":
            points.setdefault(pain["where"], []).extend(pain["reasons"])
        elif pain["where"] in by_arrow:
            edges.setdefault(by_arrow[pain["where"]], []).extend(pain["reasons"])
    return points, edges


def drawn_edges(
    cmap: ContactMap,
    scope: str,
    *,
    min_count: int | None = None,
    coverage: float = DEFAULT_COVERAGE,
    max_edges: int = DEFAULT_MAX_EDGES,
) -> EdgeSelection:
    """The edges `map_dot` draws for a scope (the busiest ones and every pain point)."""
    _points, pain_edges = pain_marks(cmap, scope)
    return select_edges(
        cmap.scopes[scope],
        min_count=min_count,
        coverage=coverage,
        max_edges=max_edges,
        always=frozenset(pain_edges),
    )


def _legend(scope: str, cases: int, note: str) -> str:
    """The graph label: title, the goal-rate colour scale, the width rule, what was hidden."""
    rates = (0.0, 0.25, 0.5, 0.75, 1.0)
    swatches = "".join(
        f'<td bgcolor="{goal_colour(rate)}" width="26" height="10"></td>' for rate in rates
    )
    ticks = "".join(
        f'<td><font point-size="8">{rate:.0%}</font></td>' if rate in (0, 0.5, 1) else "<td></td>"
        for rate in rates
    )
    scale = (
        '<table border="0" cellspacing="0" cellpadding="1">'
        f'<tr><td rowspan="2" valign="top"><font point-size="10">goal rate </font></td>{swatches}'
        f'<td rowspan="2" valign="top"><font point-size="10">   line width = moves (log scale)'
        f'   <font color="{PAIN_COLOUR}">red border, dashed = pain point</font></font></td>'
        f"</tr><tr>{ticks}</tr></table>"
    )
    rows = [
        f"<tr><td><b>Contact-point map · {_html(scope)}</b> · {cases:,} cases</td></tr>",
        f"<tr><td>{scale}</td></tr>",
    ]
    if note:
        rows.append(f'<tr><td><font point-size="10" color="#555555">{_html(note)}</font></td></tr>')
    return '<<table border="0" cellspacing="2" cellpadding="1">' + "".join(rows) + "</table>>"


def map_dot(
    cmap: ContactMap,
    scope: str = ALL,
    *,
    min_count: int | None = None,
    coverage: float = DEFAULT_COVERAGE,
    max_edges: int = DEFAULT_MAX_EDGES,
    mark: str = SVG_MARK,
) -> str:
    """The map of one scope as a Graphviz DOT graph."""
    if scope not in cmap.scopes:
        raise KeyError(scope)
    s = cmap.scopes[scope]
    pain_points, pain_edges = pain_marks(cmap, scope)
    chosen = select_edges(
        s,
        min_count=min_count,
        coverage=coverage,
        max_edges=max_edges,
        always=frozenset(pain_edges),
    )
    biggest = max((s.edges[key].count for key in chosen.kept), default=1)
    drawn = {point for key in chosen.kept for point in split_edge(key)}
    most_visits = max((n.visits for p, n in s.nodes.items() if p in drawn), default=1)

    lines = [
        f"digraph {_quote('map-' + scope)} {{",
        f"  graph [rankdir=LR, fontname={_quote(FONT)}, fontsize=12, labelloc=b,"
        ' nodesep=0.35, ranksep=0.7, pad=0.3, bgcolor="white", splines=true,'
        f" label={_legend(scope, s.kpis.cases, chosen.note())}];",
        f'  node [fontname={_quote(FONT)}, shape=box, style="rounded,filled",'
        ' fillcolor="#f4f6f8", color="#7b8794", penwidth=1.2, margin="0.14,0.06"];',
        f'  edge [fontname={_quote(FONT)}, fontsize=10, fontcolor="#333333", arrowsize=0.7];',
    ]
    for point in (START, END):
        if point in drawn:
            label, shape = ("start", "circle") if point == START else ("end", "doublecircle")
            lines.append(
                f"  {_quote(point)} [label={_quote(label)}, shape={shape}, fixedsize=true,"
                ' width=0.5, fontsize=9, style=filled, fillcolor="#334e68", color="#334e68",'
                ' fontcolor="white"];'
            )
    if START in drawn:
        lines.append(f"  {{ rank=source; {_quote(START)}; }}")
    if END in drawn:
        lines.append(f"  {{ rank=sink; {_quote(END)}; }}")
    for point in sorted(drawn - {START, END}):
        node = s.nodes.get(point)
        visits = node.visits if node else 0
        size = math.log1p(visits) / math.log1p(most_visits) if most_visits > 0 else 0.0
        fontsize = round(10 + 6 * size, 1)
        label = f"{_wrap(point)}\n{visits:,} visits"
        tip = f"{point}: {visits:,} visits"
        if node:
            tip += (
                f", {node.entries:,} entries, {node.exits:,} exits, {node.drop_offs:,} drop-offs,"
                f" {node.loops:,} loops"
            )
        attrs = [f"fontsize={fontsize}"]
        if point in pain_points:
            label = f"{mark} {label}"
            tip += "; pain point: " + "; ".join(pain_points[point])
            attrs += [f'color="{PAIN_COLOUR}"', "penwidth=3", 'fillcolor="#fdecea"']
        attrs += [f"label={_quote(label)}", f"tooltip={_quote(tip)}"]
        lines.append(f"  {_quote(point)} [{', '.join(attrs)}];")
    for key in chosen.kept:
        source, target = split_edge(key)
        edge = s.edges[key]
        rate = edge_goal_rate(edge)
        timed = START not in (source, target) and END not in (source, target)
        label = f"{edge.count:,}"
        if timed and edge.durations.count:
            label += f" · {human_duration(edge.durations.quantile(0.5))}"
        tip = (
            f"{source} → {target}: {edge.count:,} moves in {edge.cases:,} cases,"
            f" goal reached {rate:.0%}"
        )
        if timed and edge.durations.count:
            tip += (
                f", p50 {human_duration(edge.durations.quantile(0.5))},"
                f" p90 {human_duration(edge.durations.quantile(0.9))}"
            )
        if edge.channel_switches:
            tip += f", {edge.channel_switches:,} channel switches"
        attrs = [
            f"penwidth={pen_width(edge.count, biggest)}",
            f'color="{goal_colour(rate)}"',
        ]
        if key in pain_edges:
            label = f"{mark} {label}"
            tip += "; pain point: " + "; ".join(pain_edges[key])
            attrs += ["style=dashed", f'fontcolor="{PAIN_COLOUR}"']
        if edge.channel_switches and edge.count and edge.channel_switches / edge.count >= 0.5:
            label += " ⇄" if mark == SVG_MARK else " ↔"
        attrs += [f"label={_quote(label)}", f"tooltip={_quote(tip)}"]
        lines.append(f"  {_quote(source)} -> {_quote(target)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- rendering
def find_graphviz() -> str:
    """The Graphviz program to run: graphviz-pure beside this Python, then on PATH, then dot."""
    beside = Path(sys.executable).parent / GRAPHVIZ_PURE
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    for name in (GRAPHVIZ_PURE, "dot"):
        found = shutil.which(name)
        if found:
            return found
    raise GraphvizMissing(
        f"no Graphviz found: neither {GRAPHVIZ_PURE} (next to {sys.executable} or on PATH) nor "
        f"dot. Install it into the virtual environment with `pip install {GRAPHVIZ_PURE}` "
        "(`make install` does), or install Graphviz."
    )


def render(dot: str, fmt: str, program: str | None = None, timeout: float = 120) -> bytes:
    """Lay out and draw a DOT graph; `fmt` is `svg` or `png`."""
    program = program or find_graphviz()
    done = subprocess.run(
        [program, f"-T{fmt}"],
        input=dot.encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0 or not done.stdout:
        raise GraphvizFailed(
            f"{Path(program).name} -T{fmt} failed ({done.returncode}): "
            + done.stderr.decode(errors="replace").strip()
        )
    return done.stdout


def render_map(
    cmap: ContactMap,
    scope: str,
    out: Path,
    *,
    min_count: int | None = None,
    max_edges: int = DEFAULT_MAX_EDGES,
    coverage: float = DEFAULT_COVERAGE,
    formats: tuple[str, ...] = ("svg", "png"),
) -> list[Path]:
    """Write `map-<scope>.svg` and `.png` into `out`; return their paths."""
    program = find_graphviz()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        dot = map_dot(
            cmap,
            scope,
            min_count=min_count,
            coverage=coverage,
            max_edges=max_edges,
            mark=SVG_MARK if fmt == "svg" else PNG_MARK,
        )
        path = out / f"map-{file_stem(scope)}.{fmt}"
        path.write_bytes(render(dot, fmt, program))
        paths.append(path)
    return paths


def load_map(path: Path) -> ContactMap:
    """A ContactMap from `contact_map.json` (or the folder that holds it)."""
    if path.is_dir():
        path = path / "contact_map.json"
    return msgspec.json.decode(path.read_bytes(), type=ContactMap)
