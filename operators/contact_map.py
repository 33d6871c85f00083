"""The contact-point map: the places customers really go, learned from their paths.

Nodes are contact points; edges are the transitions customers actually take
between them (directly-follows), with counts, the time they take, the share of
cases on them that reach the goal, and the channel switch they are. Per scope:
`all`, and each journey (or intent). Journey KPIs and ranked pain points come
from the same accumulation. State is bounded by the vocabulary of contact
points, never by the number of customers: a finished path is folded in and
forgotten.
"""

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from msgspec import Struct, field

from operators.wording import span

START, END = "__start__", "__end__"
ALL = "all"

#: Four bins per doubling: quantiles within about 9 %, any range, mergeable.
_BINS_PER_DOUBLING = 4


class Durations(Struct):
    """A log-binned histogram of durations in seconds, with an exact mean.

    The total is whole milliseconds, so it sums to the same value in any order
    (paths arrive in different orders with more workers, or live vs replay).
    """

    count: int = 0
    total_ms: int = 0
    max_ms: int = 0
    bins: dict[int, int] = field(default_factory=dict)

    def add(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.count += 1
        ms = round(seconds * 1000)
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)
        b = int(math.log2(seconds + 1.0) * _BINS_PER_DOUBLING)
        self.bins[b] = self.bins.get(b, 0) + 1

    @property
    def mean(self) -> float:
        return self.total_ms / 1000 / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The q-quantile, at the middle of its bin (exact for zero durations)."""
        if not self.count:
            return 0.0
        rank = q * (self.count - 1)
        seen = 0
        for b in sorted(self.bins):
            seen += self.bins[b]
            if seen > rank:
                low = 2 ** (b / _BINS_PER_DOUBLING) - 1.0
                high = 2 ** ((b + 1) / _BINS_PER_DOUBLING) - 1.0
                return 0.0 if b == 0 else (low + high) / 2
        return 0.0


class Edge(Struct):
    count: int = 0
    cases: int = 0
    goal_cases: int = 0
    durations: Durations = field(default_factory=Durations)
    channel_switches: int = 0


class Node(Struct):
    visits: int = 0
    entries: int = 0
    exits: int = 0
    drop_offs: int = 0
    loops: int = 0
    dwell: Durations = field(default_factory=Durations)
    #: Sentiment in thousandths, summed as integers (the same in any order).
    sentiment_milli: int = 0
    sentiment_cases: int = 0


class Kpis(Struct):
    cases: int = 0
    completed: int = 0
    abandoned: int = 0
    #: Still in flight when a bounded input ended (a replay, an embedded run).
    open: int = 0
    goal_reached: int = 0
    loops: int = 0
    channel_switches: int = 0
    events: int = 0
    time_to_goal: Durations = field(default_factory=Durations)
    case_durations: Durations = field(default_factory=Durations)
    #: Sentiment in thousandths, summed as integers (the same in any order).
    sentiment_milli: int = 0
    sentiment_cases: int = 0
    partners: dict[str, list[int]] = field(default_factory=dict)  # partner -> [cases, goal]


class Scope(Struct):
    edges: dict[str, Edge] = field(default_factory=dict)  # "source\x1ftarget"
    nodes: dict[str, Node] = field(default_factory=dict)
    kpis: Kpis = field(default_factory=Kpis)


class Step(NamedTuple):
    """One visit of a contact point in a case (a customer's journey, or a log's case).

    A named tuple, not a frozen dataclass: a replay makes one per event of its log, and
    a frozen dataclass sets each field through `object.__setattr__`."""

    contact_point: str
    ts: float
    channel: str | None = None


_SEP = "\x1f"


def _summary(durations: Durations) -> dict[str, float]:
    return {
        "mean": round(durations.mean, 3),
        "p50": round(durations.quantile(0.5), 3),
        "p90": round(durations.quantile(0.9), 3),
        "max": durations.max_ms / 1000,
    }


def edge_key(source: str, target: str) -> str:
    return source + _SEP + target


def split_edge(key: str) -> tuple[str, str]:
    source, target = key.split(_SEP, 1)
    return source, target


class ContactMap(Struct):
    """The map and KPIs, per scope; fold finished cases in with `add_case`."""

    scopes: dict[str, Scope] = field(default_factory=dict)

    def add_case(
        self,
        scope: str,
        steps: Sequence[Step],
        *,
        goal: bool,
        outcome: str = "ended",
        partner: str | None = None,
        sentiment: float | None = None,
    ) -> None:
        """Fold one finished case's path (in time order) into `scope`."""
        if not steps:
            return
        s = self.scopes.get(scope)
        if s is None:
            s = self.scopes[scope] = Scope()
        k = s.kpis
        k.cases += 1
        k.events += len(steps)
        k.completed += outcome == "completed"
        k.abandoned += outcome == "abandoned"
        k.open += outcome == "open"
        duration = steps[-1].ts - steps[0].ts
        k.case_durations.add(duration)
        if goal:
            k.goal_reached += 1
            k.time_to_goal.add(duration)
        if sentiment is not None:
            k.sentiment_milli += round(sentiment * 1000)
            k.sentiment_cases += 1
        if partner is not None:
            tally = k.partners.setdefault(partner, [0, 0])
            tally[0] += 1
            tally[1] += goal

        seen_nodes: set[str] = set()
        seen_edges: set[str] = set()
        path = [START, *(step.contact_point for step in steps), END]
        for i, point in enumerate(path[1:-1], start=1):
            node = s.nodes.get(point)
            if node is None:
                node = s.nodes[point] = Node()
            node.visits += 1
            if point in seen_nodes and path[i - 1] != point:
                node.loops += 1
                k.loops += 1
            seen_nodes.add(point)
            if sentiment is not None and i == len(path) - 2:
                node.sentiment_milli += round(sentiment * 1000)
                node.sentiment_cases += 1
            if i < len(path) - 2:
                node.dwell.add(steps[i].ts - steps[i - 1].ts)
        first, last = s.nodes[path[1]], s.nodes[path[-2]]
        first.entries += 1
        last.exits += 1
        if not goal:
            last.drop_offs += 1

        for i in range(len(path) - 1):
            key = edge_key(path[i], path[i + 1])
            edge = s.edges.get(key)
            if edge is None:
                edge = s.edges[key] = Edge()
            edge.count += 1
            if key not in seen_edges:
                seen_edges.add(key)
                edge.cases += 1
                edge.goal_cases += goal
            if 0 < i < len(path) - 2:
                before, after = steps[i - 1], steps[i]
                edge.durations.add(after.ts - before.ts)
                if before.channel and after.channel and before.channel != after.channel:
                    edge.channel_switches += 1
                    k.channel_switches += 1
            else:
                edge.durations.add(0.0)

    # ------------------------------------------------------------------ reading it
    def edge_rows(self) -> list[dict[str, Any]]:
        """One row per scope and edge, in the shape of contact_map_edges.csv."""
        rows = []
        for scope in sorted(self.scopes):
            for key, edge in sorted(self.scopes[scope].edges.items()):
                source, target = split_edge(key)
                rows.append(
                    {
                        "scope": scope,
                        "source": source,
                        "target": target,
                        "count": edge.count,
                        "mean_seconds": round(edge.durations.mean, 3),
                        "p50_seconds": round(edge.durations.quantile(0.5), 3),
                        "p90_seconds": round(edge.durations.quantile(0.9), 3),
                        "goal_rate": round(edge.goal_cases / edge.cases, 4) if edge.cases else 0.0,
                    }
                )
        return rows

    def kpis(self, scope: str) -> dict[str, Any]:
        s = self.scopes[scope]
        k = s.kpis
        drop_off = {
            point: node.drop_offs
            for point, node in sorted(s.nodes.items(), key=lambda kv: -kv[1].drop_offs)
            if node.drop_offs
        }
        return {
            "scope": scope,
            "started": k.cases,
            "completed": k.completed,
            "goal_reached": k.goal_reached,
            "completion_rate": round(k.goal_reached / k.cases, 4) if k.cases else 0.0,
            "abandoned": k.abandoned,
            "open": k.open,
            "events": k.events,
            "loops": k.loops,
            "channel_switches": k.channel_switches,
            "time_to_goal_seconds": _summary(k.time_to_goal),
            "case_duration_seconds": _summary(k.case_durations),
            "drop_off_by_last_contact_point": drop_off,
            "sentiment": round(k.sentiment_milli / 1000 / k.sentiment_cases, 3)
            if k.sentiment_cases
            else None,
            "by_partner": {
                partner: {"cases": n, "goal_reached": g, "goal_rate": round(g / n, 4)}
                for partner, (n, g) in sorted(k.partners.items())
            },
        }

    def pain_points(self, scope: str, top: int = 10) -> list[dict[str, Any]]:
        """Contact points and edges that do worse than the scope's average, worst first."""
        s = self.scopes[scope]
        k = s.kpis
        visits = sum(n.visits for n in s.nodes.values()) or 1
        avg_drop = sum(n.drop_offs for n in s.nodes.values()) / visits
        avg_loop = k.loops / visits
        p90s = sorted(
            e.durations.quantile(0.9)
            for key, e in s.edges.items()
            if START not in key and END not in key and e.durations.count
        )
        typical_wait = p90s[len(p90s) // 2] if p90s else 0.0
        avg_sentiment = k.sentiment_milli / 1000 / k.sentiment_cases if k.sentiment_cases else None
        found: list[dict[str, Any]] = []
        for point, node in s.nodes.items():
            if node.visits < 5:
                continue  # too few to say
            reasons, score = [], 0.0
            drop = node.drop_offs / node.visits
            if avg_drop and drop > 1.5 * avg_drop:
                score = max(score, drop / avg_drop)
                reasons.append(f"drop-off {drop:.0%} of visits vs {avg_drop:.0%} on average")
            loop = node.loops / node.visits
            if loop > 0.05 and (not avg_loop or loop > 1.5 * avg_loop):
                score = max(score, loop / avg_loop if avg_loop else 2.0)
                reasons.append(f"revisited in {loop:.0%} of visits (loops)")
            if node.sentiment_cases and avg_sentiment is not None:
                mood = node.sentiment_milli / 1000 / node.sentiment_cases
                if mood < min(avg_sentiment - 0.2, -0.1):
                    score = max(score, 1.0 + (avg_sentiment - mood))
                    reasons.append(f"sentiment {mood:+.2f} vs {avg_sentiment:+.2f}")
            if reasons:
                found.append(
                    {
                        "kind": "contact_point",
                        "where": point,
                        "score": round(score, 3),
                        "visits": node.visits,
                        "reasons": reasons,
                    }
                )
        for key, edge in s.edges.items():
            source, target = split_edge(key)
            if START in (source, target) or END in (source, target) or edge.count < 5:
                continue
            p90 = edge.durations.quantile(0.9)
            if typical_wait and p90 > 3 * typical_wait:
                found.append(
                    {
                        "kind": "edge",
                        "where": f"{source} -> {target}",
                        "score": round(p90 / typical_wait, 3),
                        "visits": edge.count,
                        "reasons": [f"p90 wait {span(p90)} vs {span(typical_wait)} typical"],
                    }
                )
        found.sort(key=lambda p: (-p["score"], p["where"]))
        return found[:top]
