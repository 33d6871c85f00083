"""The contact-point map on disk: what other tools read (and `wayfinder map` draws).

`contact_map_edges.csv` (the output contract: scope, source, target, count,
mean_seconds, p50_seconds, p90_seconds, goal_rate) and `contact_map.json` (the
whole map, every scope, for pictures and reports), from a run's analytics
snapshots or from a replay.
"""

import csv
from collections.abc import Iterable
from pathlib import Path

import msgspec

from operators.contact_map import ContactMap, Scope
from schemas.analytics import AnalyticsSnapshot

EDGE_COLUMNS = (
    "scope",
    "source",
    "target",
    "count",
    "mean_seconds",
    "p50_seconds",
    "p90_seconds",
    "goal_rate",
)


def map_from_snapshots(messages: Iterable[bytes]) -> ContactMap:
    """The latest snapshot of every scope (analytics topic messages or file lines), as one map."""
    cmap = ContactMap()
    decoder = msgspec.json.Decoder(AnalyticsSnapshot)
    latest: dict[str, AnalyticsSnapshot] = {}
    for message in messages:
        snapshot = decoder.decode(message)
        seen = latest.get(snapshot.scope)
        if seen is None or (snapshot.at, snapshot.cases) >= (seen.at, seen.cases):
            latest[snapshot.scope] = snapshot
    for scope, snapshot in sorted(latest.items()):
        cmap.scopes[scope] = msgspec.convert(snapshot.map, Scope, strict=False)
    return cmap


def canonical_json(cmap: ContactMap) -> bytes:
    """The map as JSON with sorted keys: the same map gives the same bytes, whatever
    order its paths came in."""
    return msgspec.json.encode(msgspec.to_builtins(cmap, str_keys=True), order="sorted")


def write_edges_csv(cmap: ContactMap, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EDGE_COLUMNS)
        writer.writeheader()
        writer.writerows(cmap.edge_rows())
    return path


def write_map_files(cmap: ContactMap, out: Path) -> dict[str, Path]:
    """Write the edges CSV and the full map JSON into `out`; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    edges = write_edges_csv(cmap, out / "contact_map_edges.csv")
    full = out / "contact_map.json"
    full.write_bytes(canonical_json(cmap))
    return {"contact map edges": edges, "contact map": full}
