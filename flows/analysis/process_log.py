"""Real history as journeys: process-mining CSV event logs and JSON-lines event files.

A process-mining log has one row per event: a case id (the journey, or the
customer), an activity (the contact point) and a timestamp, and optionally a
channel, a resource and any other attributes. The defaults are the XES names
that pm4py, ProM and Disco write (`case:concept:name`, `concept:name`,
`time:timestamp`, `case:channel`, `org:resource`); other names are mapped with
`Columns`. A column named explicitly must be in the file; the default channel
and resource columns are used when present.

Order: within a case, events are ordered by timestamp, ties kept in file
order; across cases, the stream is in timestamp order, ties in file order
(one stable sort by time does both).

Timestamps: RFC 3339 / ISO 8601 (`T` or a space, fractional seconds, `Z`,
`+02:00`, `+0200`, `+02`, a trailing `UTC`), a few common other layouts
(`2011/10/11 13:45:40`, `11-10-2011 13:45`, `11.10.2011 13:45:40`, day first),
epoch seconds or milliseconds, or an explicit strptime format. A timestamp
without an offset is UTC unless a time zone is given. A row whose timestamp
(or case id, or activity) cannot be read is skipped and counted, never fatal.

The whole log is held in memory (a few hundred MB of CSV is fine): rows are
read with the csv module, strings repeated across rows are shared.
"""

import csv
import gc
import gzip
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from operator import itemgetter
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from operators.identity import customer_key
from schemas.codec import BadInput, EventDecoder
from schemas.event import Event

if TYPE_CHECKING:
    from _csv import Reader as CsvReader  # the type csv.reader returns

DEFAULT_CASE = "case:concept:name"
DEFAULT_ACTIVITY = "concept:name"
DEFAULT_TIMESTAMP = "time:timestamp"
DEFAULT_CHANNEL = "case:channel"
DEFAULT_RESOURCE = "org:resource"

#: Skip reasons (the keys of `ProcessLog.skipped`).
NO_CASE = "missing case id"
NO_ACTIVITY = "missing activity"
NO_TIMESTAMP = "missing timestamp"
BAD_TIMESTAMP = "unreadable timestamp"
SHORT_ROW = "too few fields"
BAD_EVENT = "invalid event"
NO_TOUCHPOINT = "no touchpoint"
ERASURE = "erasure request"
ERASED = "erased customer"
DUPLICATE = "duplicate event"

#: How many skipped rows are kept as examples for the report.
EXAMPLES = 5


class LogError(Exception):
    """The log cannot be replayed at all (a missing column, an unknown time zone...)."""


# --------------------------------------------------------------------------- timestamps
#: Layouts tried when a value is not ISO 8601 (day first where the year is last).
_FALLBACK_FORMATS = (
    *(
        f"{date} {time}".strip()
        for date in ("%Y/%m/%d", "%d-%m-%Y", "%d.%m.%Y")
        for time in ("%H:%M:%S.%f", "%H:%M:%S", "%H:%M", "")
    ),
    "%Y-%m-%d %H:%M:%S %z",
    "%Y/%m/%d %H:%M:%S%z",
    "%Y/%m/%d %H:%M:%S.%f%z",
)
_EPOCH = re.compile(r"^\d{9,13}(\.\d+)?$")
_UTC_SUFFIX = re.compile(r"\s*(?:UTC|GMT|Z)$", re.IGNORECASE)


def time_zone(name: str | None) -> tzinfo:
    """The zone naive timestamps are in: UTC, or an IANA name such as Europe/Amsterdam."""
    if not name or name.upper() in {"UTC", "Z", "GMT"}:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise LogError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Amsterdam)"
        ) from (exc)


class TimestampParser:
    """Text to epoch seconds, or None when it cannot be read.

    ISO 8601 first (C speed), then the last other layout that worked, then the rest.
    """

    def __init__(self, zone: tzinfo = UTC, fmt: str | None = None) -> None:
        self.zone = zone
        self.fmt = fmt
        self._formats: list[str] = [fmt] if fmt else list(_FALLBACK_FORMATS)

    def __call__(self, text: str) -> float | None:
        if self.fmt is None:
            try:  # the common case, first and fast
                value = datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                if value.tzinfo is None:
                    value = value.replace(tzinfo=self.zone)
                return value.timestamp()
        return self._slow(text)

    def _slow(self, text: str) -> float | None:
        text = text.strip()
        if not text:
            return None
        if self.fmt is None:
            if _EPOCH.match(text):
                value = float(text)
                return value / 1000 if value >= 1e11 else value
            normalised = _UTC_SUFFIX.sub("+00:00", text)
            normalised = normalised[:10] + normalised[10:11].upper() + normalised[11:]
            try:
                return self._epoch(datetime.fromisoformat(normalised))
            except ValueError:
                pass
        formats = self._formats
        for i, fmt in enumerate(formats):
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            if i:  # the next value most likely has the same layout
                formats.insert(0, formats.pop(i))
            return self._epoch(parsed)
        return None

    def _epoch(self, value: datetime) -> float:
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.zone)
        return value.timestamp()


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Hold the cyclic garbage collector while millions of tuples are built: it would
    otherwise walk them again and again (a third of the reading time), and they hold
    no cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --------------------------------------------------------------------------- the log
class LogEvent(NamedTuple):
    """One event of a case; `values` line up with `ProcessLog.attribute_names`."""

    ts: float
    case: str
    activity: str
    channel: str | None
    resource: str | None
    values: tuple[str | None, ...]


@dataclass(frozen=True)
class Columns:
    """Which column is what. A name given here must be in the file, except the default
    channel and resource columns, which are used when present; `None` (or "") for the
    channel or resource: do not use one. `attributes` None: every column besides case,
    activity and timestamp."""

    case: str = DEFAULT_CASE
    activity: str = DEFAULT_ACTIVITY
    timestamp: str = DEFAULT_TIMESTAMP
    channel: str | None = DEFAULT_CHANNEL
    resource: str | None = DEFAULT_RESOURCE
    attributes: tuple[str, ...] | None = None


@dataclass
class ProcessLog:
    """A replayable log: its events in stream order and what was skipped on the way."""

    source: str
    events: list[LogEvent]
    #: The attributes every event carries to the next-step models (channel and resource
    #: under their own names first, then the attribute columns).
    attribute_names: tuple[str, ...]
    rows: int
    skipped: Counter[str] = field(default_factory=Counter)
    #: A few skipped rows: (row number, reason, value).
    examples: list[tuple[int, str, str]] = field(default_factory=list)
    #: The columns used (name -> column), for the summary.
    columns: dict[str, str | None] = field(default_factory=dict)
    #: The resource is a channel partner (events files: partner_id), measured as such.
    partners: bool = False

    @property
    def skipped_rows(self) -> int:
        return sum(self.skipped.values())

    def cases(self) -> dict[str, list[LogEvent]]:
        """Each case's events in order (timestamp, ties in file order), cases in the
        order they start."""
        cases: dict[str, list[LogEvent]] = {}
        for event in self.events:
            path = cases.get(event.case)
            if path is None:
                cases[event.case] = [event]
            else:
                path.append(event)
        return cases

    def stream(self) -> Iterator[tuple[str, str, float, Mapping[str, str | None]]]:
        """(case, activity, ts, attributes of this event), in timestamp order, cases
        interleaved: the input of `operators.next_step.prequential`."""
        names = self.attribute_names
        for event in self.events:
            yield event.case, event.activity, event.ts, dict(zip(names, event.values, strict=True))

    def _skip(self, row: int, reason: str, value: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append((row, reason, value[:120]))


def _open_text(path: Path, encoding: str) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return path.open(encoding=encoding, newline="")


def sniff_delimiter(header: str) -> str:
    """The likeliest delimiter of a header line: the most frequent of , ; tab |."""
    counts = {d: header.count(d) for d in ",;\t|"}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _index(header: list[str], name: str, what: str, flag: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        shown = ", ".join(header[:30]) + (" ..." if len(header) > 30 else "")
        raise LogError(
            f"no {what} column {name!r} in the log (choose one with {flag}); columns: {shown}"
        ) from None


def _optional_index(
    header: list[str], name: str | None, default: str, what: str, flag: str
) -> int | None:
    if not name:
        return None
    if name == default and name not in header:
        return None  # the default is used only when present
    return _index(header, name, what, flag)


def read_process_log(
    path: Path | str,
    columns: Columns = Columns(),
    *,
    timezone: str | None = None,
    timestamp_format: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8-sig",
) -> ProcessLog:
    """Read a process-mining CSV (optionally .csv.gz) into a replayable log."""
    path = Path(path)
    if not path.is_file():
        raise LogError(f"no such log file: {path}")
    parse = TimestampParser(time_zone(timezone), timestamp_format)
    try:
        with _open_text(path, encoding) as f:
            first = f.readline()
            if not first.strip():
                raise LogError(f"{path} is empty (no header row)")
            sep = delimiter or sniff_delimiter(first)
            f.seek(0)
            with no_cyclic_gc():
                return _read_rows(path, csv.reader(f, delimiter=sep), columns, parse)
    except UnicodeDecodeError as exc:
        raise LogError(
            f"{path} is not {encoding} text ({exc.reason} at byte {exc.start}); "
            "give its --encoding (latin-1, cp1252...)"
        ) from None
    except csv.Error as exc:
        raise LogError(f"{path}: not a readable CSV: {exc}") from None


def _read_rows(
    path: Path, reader: "CsvReader", columns: Columns, parse: TimestampParser
) -> ProcessLog:
    header = [name.strip() for name in next(reader)]
    i_case = _index(header, columns.case, "case id", "--case-column")
    i_act = _index(header, columns.activity, "activity", "--activity-column")
    i_ts = _index(header, columns.timestamp, "timestamp", "--timestamp-column")
    i_ch = _optional_index(header, columns.channel, DEFAULT_CHANNEL, "channel", "--channel-column")
    i_res = _optional_index(
        header, columns.resource, DEFAULT_RESOURCE, "resource", "--resource-column"
    )
    if columns.attributes is None:
        attrs = [i for i in range(len(header)) if i not in {i_case, i_act, i_ts}]
    else:
        attrs = [_index(header, name, "attribute", "--attribute") for name in columns.attributes]
    # channel and resource always reach the models, under their own names
    carried = [i for i in (i_ch, i_res) if i is not None]
    attrs = carried + [i for i in dict.fromkeys(attrs) if i not in carried]
    log = ProcessLog(
        source=str(path),
        events=[],
        attribute_names=tuple(header[i] for i in attrs),
        rows=0,
        columns={
            "case": header[i_case],
            "activity": header[i_act],
            "timestamp": header[i_ts],
            "channel": None if i_ch is None else header[i_ch],
            "resource": None if i_res is None else header[i_res],
        },
    )
    needed = max(i_case, i_act, i_ts)
    width = 1 + max([needed, *attrs, *(i for i in (i_ch, i_res) if i is not None)])
    # One string object per distinct value (memory); an empty field is None.
    shared: dict[str, str | None] = {"": None}
    share = shared.setdefault
    names: dict[str, str] = {}  # case ids and activities, never empty
    name = names.setdefault
    attribute_values: Callable[[list[str]], tuple[str, ...]]
    if len(attrs) > 1:
        attribute_values = itemgetter(*attrs)
    elif attrs:
        only = attrs[0]

        def attribute_values(row: list[str]) -> tuple[str, ...]:
            return (row[only],)
    else:

        def attribute_values(row: list[str]) -> tuple[str, ...]:
            return ()

    events = log.events
    append = events.append
    rows = 0
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line is not a row
        rows += 1
        if len(row) <= needed:
            log._skip(reader.line_num, SHORT_ROW, ",".join(row))
            continue
        case, activity, stamp = row[i_case], row[i_act], row[i_ts]  # names exactly as logged
        if not case.strip():
            log._skip(reader.line_num, NO_CASE, ",".join(row))
            continue
        if not activity.strip():
            log._skip(reader.line_num, NO_ACTIVITY, ",".join(row))
            continue
        ts = parse(stamp)
        if ts is None:
            reason = BAD_TIMESTAMP if stamp.strip() else NO_TIMESTAMP
            log._skip(reader.line_num, reason, stamp)
            continue
        if len(row) < width:  # trailing fields left out: empty
            row.extend([""] * (width - len(row)))
        values = attribute_values(row)
        append(
            LogEvent(
                ts,
                name(case, case),
                name(activity, activity),
                None if i_ch is None else share(row[i_ch], row[i_ch]),
                None if i_res is None else share(row[i_res], row[i_res]),
                tuple(map(share, values, values)),
            )
        )
    log.rows = rows
    events.sort(key=itemgetter(0))  # stable: ties stay in file order
    return log


# --------------------------------------------------------------------------- event files
#: What an event of our own wire format carries to the next-step models.
EVENT_ATTRIBUTES = ("channel", "type", "partner_id")


def read_event_file(path: Path | str) -> ProcessLog:
    """Our own JSON-lines events (wire format) as a log: the case is the customer
    (customer_id, else the anonymous id), the activity the touchpoint (events without
    one are skipped and counted), the channel the channel. Lines that do not decode
    are skipped and counted; so are duplicates (same event_id) and, on an erasure, the
    customer's events before it (the customer is removed everywhere)."""
    path = Path(path)
    if not path.is_file():
        raise LogError(f"no such events file: {path}")
    decoder = EventDecoder()
    log = ProcessLog(
        source=str(path),
        events=[],
        attribute_names=EVENT_ATTRIBUTES,
        rows=0,
        columns={"case": "customer", "activity": "touchpoint", "timestamp": "ts"},
        partners=True,
    )
    log.columns.update(channel="channel", resource="partner_id")
    decoded: list[tuple[float, int, Event]] = []
    seen: set[str] = set()
    shared: dict[str, str] = {}
    share = shared.setdefault
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            raw = line.strip()
            if not raw:
                continue
            log.rows += 1
            try:
                event = decoder.decode(raw)
            except BadInput as exc:
                log._skip(number, BAD_EVENT, f"{exc.reason}: {exc.detail}")
                continue
            if event.event_id in seen:
                log._skip(number, DUPLICATE, event.event_id)
                continue
            seen.add(event.event_id)
            decoded.append((event.ts.timestamp(), number, event))
    decoded.sort(key=itemgetter(0))  # stable: ties stay in file order
    kept: list[tuple[int, LogEvent]] = []
    erased_before: dict[str, int] = {}
    for ts, number, event in decoded:
        key = share(customer_key(event), customer_key(event))
        if event.type == "erase":
            erased_before[key] = len(kept)
            log._skip(number, ERASURE, event.event_id)
            continue
        touchpoint = event.touchpoint
        if touchpoint is None:
            log._skip(number, NO_TOUCHPOINT, event.event_id)
            continue
        channel = share(event.channel, event.channel)
        values = (channel, share(event.type, event.type), event.partner_id)
        kept.append(
            (
                number,
                LogEvent(ts, key, share(touchpoint, touchpoint), channel, event.partner_id, values),
            )
        )
    if erased_before:
        remaining = []
        for position, (number, kept_event) in enumerate(kept):
            if position < erased_before.get(kept_event.case, -1):
                log._skip(number, ERASED, kept_event.case)
            else:
                remaining.append((number, kept_event))
        kept = remaining
    log.events = [event for _number, event in kept]
    return log


def describe_skipped(log: ProcessLog) -> list[str]:
    """Skipped rows in words: a line per reason, and a few examples."""
    lines = [f"{n:,} {reason}" for reason, n in log.skipped.most_common()]
    lines += [f"  row {row}: {reason}: {value!r}" for row, reason, value in log.examples]
    return lines
