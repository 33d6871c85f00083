"""Windowed analytics snapshots, published on the `analytics` topic."""

from datetime import datetime
from typing import Any

from msgspec import Struct


class AnalyticsSnapshot(Struct, kw_only=True):
    """The contact-point map and KPIs of one scope (a journey, or `all`), so far.

    Cumulative since the flow started (or was recovered); a new one is published
    at each event-time window boundary and when the input ends. `map` is the
    scope's full state (nodes, edges, duration histograms), so a consumer can
    redraw the map or merge scopes without the flow.
    """

    scope: str
    at: datetime
    cases: int
    kpis: dict[str, Any]
    edges: list[dict[str, Any]]
    pain_points: list[dict[str, Any]]
    map: dict[str, Any]
