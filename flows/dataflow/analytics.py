"""The analytics step of the dataflow: one stateful map per scope, snapshotted by window.

Finished journeys arrive keyed by scope (their journey, and `all`); each scope
folds them into its part of the contact-point map and publishes a snapshot on
the analytics topic when event time crosses a window boundary and when the
input ends. Gauges per journey feed Prometheus.
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import msgspec
from bytewax.operators import StatefulBatchLogic

from flows.runtime import metrics
from operators.analytics import TERMINAL, InFlight, fold_in_flight, fold_transition, scopes_of
from operators.contact_map import ALL, ContactMap, Scope
from schemas.analytics import AnalyticsSnapshot
from schemas.journey import JourneyTransition

#: Event-time window between snapshots of a scope.
WINDOW_SECONDS = 3600.0

Scoped = tuple[str, JourneyTransition | InFlight]


class _State(msgspec.Struct, array_like=True):
    scope: str
    window_end: float
    latest: float
    dirty: bool
    map: Scope


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_State)


def finished_journeys(batch: Sequence[tuple[str, object]]) -> list[tuple[str, Scoped]]:
    """A batch of customer-step outputs as (scope, finished journey) items; nothing for
    the rest (a batch at a time: most outputs are neither)."""
    found: list[tuple[str, Scoped]] = []
    for _key, value in batch:
        if isinstance(value, JourneyTransition):
            if value.kind in TERMINAL and value.path:
                found += [(scope, (scope, value)) for scope in scopes_of(value)]
        elif isinstance(value, InFlight):
            found += [(scope, (scope, value)) for scope in (value.journey, ALL)]
    return found


class ScopeLogic(StatefulBatchLogic[Scoped, AnalyticsSnapshot, bytes]):
    """The map of one scope; publishes it at each event-time window boundary and at the end."""

    def __init__(self, resume_state: bytes | None) -> None:
        self._state: _State | None = (
            _DECODER.decode(resume_state) if resume_state is not None else None
        )

    def on_batch(self, values: list[Scoped]) -> tuple[Iterable[AnalyticsSnapshot], bool]:
        out: list[AnalyticsSnapshot] = []
        for scope, item in values:
            at = item.at.timestamp() if isinstance(item, JourneyTransition) else item.steps[-1][1]
            state = self._state
            if state is None:
                state = self._state = _State(scope, _window_end(at), at, False, Scope())
            elif at >= state.window_end:
                if state.dirty:
                    out.append(self._publish())
                state.window_end = _window_end(at)
            cmap = ContactMap(scopes={scope: state.map})
            if isinstance(item, InFlight):
                fold_in_flight(cmap, item, scope)
            elif not fold_transition(cmap, item, scope):
                continue
            state.dirty = True
            state.latest = max(state.latest, at)
        return out, False

    def on_eof(self) -> tuple[Iterable[AnalyticsSnapshot], bool]:
        if self._state is not None and self._state.dirty:
            return [self._publish()], False
        return [], False

    def snapshot(self) -> bytes:
        assert self._state is not None
        return _ENCODER.encode(self._state)

    def _publish(self) -> AnalyticsSnapshot:
        state = self._state
        assert state is not None
        state.dirty = False
        cmap = ContactMap(scopes={state.scope: state.map})
        kpis = cmap.kpis(state.scope)
        if state.scope != "all":
            metrics.JOURNEY_CASES.labels(state.scope).set(kpis["started"])
            metrics.JOURNEY_GOAL_RATE.labels(state.scope).set(kpis["completion_rate"])
        return AnalyticsSnapshot(
            scope=state.scope,
            at=datetime.fromtimestamp(state.latest, UTC),
            cases=kpis["started"],
            kpis=kpis,
            edges=cmap.edge_rows(),
            pain_points=cmap.pain_points(state.scope),
            map=msgspec.to_builtins(state.map),
        )


def _window_end(at: float) -> float:
    return (at // WINDOW_SECONDS + 1) * WINDOW_SECONDS
