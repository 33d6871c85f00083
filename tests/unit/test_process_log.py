"""Reading process-mining logs (and our own event files) as journeys: timestamps,
order, skipped rows, column mapping."""

import gzip
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.analysis.process_log import (
    BAD_TIMESTAMP,
    DUPLICATE,
    ERASED,
    NO_ACTIVITY,
    NO_CASE,
    NO_TIMESTAMP,
    NO_TOUCHPOINT,
    SHORT_ROW,
    Columns,
    LogError,
    TimestampParser,
    read_event_file,
    read_process_log,
    time_zone,
)
from flows.analysis.replay import default_goal
from flows.cli import main as wayfinder
from tests.helpers import ev, wire

HEADER = "case:concept:name,concept:name,time:timestamp,case:channel,org:resource,amount"

# 2011-10-11 11:45:40.276 UTC
INSTANT = datetime(2011, 10, 11, 11, 45, 40, 276000, tzinfo=UTC).timestamp()


def write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def paths(log) -> dict[str, list[str]]:
    return {case: [e.activity for e in events] for case, events in log.cases().items()}


# --------------------------------------------------------------------------- timestamps
@pytest.mark.parametrize(
    "text",
    [
        "2011-10-11 13:45:40.276000+02:00",
        "2011-10-11T13:45:40.276+02:00",
        "2011-10-11T11:45:40.276Z",
        "2011-10-11T11:45:40.276z",
        "2011-10-11 11:45:40.276 UTC",
        "2011-10-11T11:45:40.276000000Z",  # nanoseconds, as some exporters write
        "2011-10-11T13:45:40.276+0200",
        "2011-10-11T13:45:40.276+02",
        "2011-10-11T06:45:40.276-05:00",
        "2011-10-11 11:45:40.276",  # naive: UTC
        "2011-10-11T11:45:40,276",
        "  2011-10-11 11:45:40.276  ",
    ],
)
def test_iso_timestamps_with_and_without_offsets_are_the_same_instant(text):
    assert TimestampParser()(text) == pytest.approx(INSTANT, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2011/10/11 11:45:40", datetime(2011, 10, 11, 11, 45, 40, tzinfo=UTC)),
        ("2011/10/11 11:45:40.5", datetime(2011, 10, 11, 11, 45, 40, 500000, tzinfo=UTC)),
        ("2011/10/11 11:45", datetime(2011, 10, 11, 11, 45, tzinfo=UTC)),
        ("11-10-2011 11:45", datetime(2011, 10, 11, 11, 45, tzinfo=UTC)),
        ("11-10-2011 11:45:40", datetime(2011, 10, 11, 11, 45, 40, tzinfo=UTC)),
        ("11.10.2011 11:45:40", datetime(2011, 10, 11, 11, 45, 40, tzinfo=UTC)),
        ("2011-10-11", datetime(2011, 10, 11, tzinfo=UTC)),
        ("1318333540", datetime(2011, 10, 11, 11, 45, 40, tzinfo=UTC)),
        ("1318333540276", datetime(2011, 10, 11, 11, 45, 40, 276000, tzinfo=UTC)),
    ],
)
def test_common_non_iso_layouts(text, expected):
    assert TimestampParser()(text) == pytest.approx(expected.timestamp(), abs=1e-6)


@pytest.mark.parametrize(
    "text", ["", "   ", "yesterday", "2011-13-45 10:00", "10/11", "31-02-2011"]
)
def test_unreadable_timestamps_are_none_not_errors(text):
    assert TimestampParser()(text) is None


def test_naive_timestamps_in_a_given_zone_including_dst():
    parse = TimestampParser(time_zone("Europe/Amsterdam"))
    # summer time (+02:00) and winter time (+01:00)
    assert parse("2011-10-11 13:45:40.276") == pytest.approx(INSTANT)
    assert parse("2011-12-01 13:00") == datetime(2011, 12, 1, 12, tzinfo=UTC).timestamp()
    # the spring-forward night: 01:30 is still winter time, 03:30 summer time
    assert parse("2011-03-27 01:30") == datetime(2011, 3, 27, 0, 30, tzinfo=UTC).timestamp()
    assert parse("2011-03-27 03:30") == datetime(2011, 3, 27, 1, 30, tzinfo=UTC).timestamp()
    # an explicit offset wins over the zone
    assert parse("2011-10-11T11:45:40.276Z") == pytest.approx(INSTANT)


def test_unknown_time_zone_is_an_error():
    with pytest.raises(LogError, match="Mars/Olympus"):
        time_zone("Mars/Olympus")


def test_explicit_timestamp_format():
    parse = TimestampParser(fmt="%m/%d/%Y %I:%M %p")
    assert parse("10/11/2011 11:45 AM") == datetime(2011, 10, 11, 11, 45, tzinfo=UTC).timestamp()
    assert parse("2011-10-11 11:45") is None  # only the given layout


# --------------------------------------------------------------------------- order
def test_order_within_cases_by_time_ties_in_file_order_and_stream_interleaved(tmp_path):
    log = read_process_log(
        write(
            tmp_path,
            "\n".join(
                [
                    HEADER,
                    "A,a3,2024-01-01T10:02:00Z,web,r1,1",
                    "B,b1,2024-01-01T10:00:30Z,app,r2,2",
                    "A,a1,2024-01-01T10:00:00Z,web,r1,3",
                    "A,tie-first,2024-01-01T10:01:00Z,web,r1,4",
                    "B,b2,2024-01-01T10:01:00Z,app,r2,5",  # ties with A's across cases
                    "A,tie-second,2024-01-01T10:01:00Z,web,r1,6",
                    # the same instant written in another offset ties too
                    "A,tie-third,2024-01-01T12:01:00+02:00,web,r1,7",
                    "B,b0,2024-01-01T09:00:00-01:00,app,r2,8",  # = 10:00 UTC: B's first
                ]
            )
            + "\n",
        )
    )
    assert paths(log) == {
        "A": ["a1", "tie-first", "tie-second", "tie-third", "a3"],
        "B": ["b0", "b1", "b2"],
    }
    # cases in the order they start; the stream in time order, ties in file order
    assert list(log.cases()) == ["A", "B"]
    stream = [(case, activity) for case, activity, _ts, _attrs in log.stream()]
    assert stream == [
        ("A", "a1"),
        ("B", "b0"),
        ("B", "b1"),
        ("A", "tie-first"),
        ("B", "b2"),
        ("A", "tie-second"),
        ("A", "tie-third"),
        ("A", "a3"),
    ]
    times = [ts for _c, _a, ts, _attrs in log.stream()]
    assert times == sorted(times)
    assert log.rows == 8 and log.skipped_rows == 0


def test_mixed_offsets_order_by_instant_not_by_text(tmp_path):
    # As text, "08:30+01:00" sorts before "09:00+02:00", but it is 30 minutes later.
    log = read_process_log(
        write(
            tmp_path,
            f"{HEADER}\nC,later,2011-10-30 08:30:00+01:00,desk,r,\n"
            "C,earlier,2011-10-30 09:00:00+02:00,desk,r,\n",
        )
    )
    assert paths(log) == {"C": ["earlier", "later"]}
    events = log.cases()["C"]
    assert events[1].ts - events[0].ts == 30 * 60


# --------------------------------------------------------------------------- bad rows
def test_bad_rows_are_skipped_and_counted_not_fatal(tmp_path):
    log = read_process_log(
        write(
            tmp_path,
            "\n".join(
                [
                    HEADER,
                    "A,start,2024-01-01 10:00:00,web,r1,1",
                    "A,broken,not a time,web,r1,1",
                    "A,empty,,web,r1,1",
                    ",orphan,2024-01-01 10:03:00,web,r1,1",
                    "A,,2024-01-01 10:04:00,web,r1,1",
                    "A,short",
                    "",  # a blank line is not a row
                    "A,end,2024-01-01 10:05:00,web,r1,1",
                    "B,only,31/31/2024 10:00,web,r1,1",
                ]
            )
            + "\n",
        )
    )
    assert paths(log) == {"A": ["start", "end"]}
    assert log.rows == 8
    assert log.skipped == {
        BAD_TIMESTAMP: 2,
        NO_TIMESTAMP: 1,
        NO_CASE: 1,
        NO_ACTIVITY: 1,
        SHORT_ROW: 1,
    }
    assert log.skipped_rows == 6
    assert log.examples[0] == (3, BAD_TIMESTAMP, "not a time")  # file line numbers


def test_a_log_with_no_readable_timestamp_reads_as_empty_not_an_exception(tmp_path):
    log = read_process_log(write(tmp_path, f"{HEADER}\nA,x,soon,web,r,\nA,y,later,web,r,\n"))
    assert log.events == [] and log.skipped == {BAD_TIMESTAMP: 2}


# --------------------------------------------------------------------------- columns
def test_default_columns_and_attributes(tmp_path):
    log = read_process_log(write(tmp_path, f"{HEADER}\nA,x,2024-01-01 10:00,web,r1,12\n"))
    assert log.columns == {
        "case": "case:concept:name",
        "activity": "concept:name",
        "timestamp": "time:timestamp",
        "channel": "case:channel",
        "resource": "org:resource",
    }
    (event,) = log.events
    assert (event.case, event.activity, event.channel, event.resource) == ("A", "x", "web", "r1")
    _case, _activity, _ts, attributes = next(log.stream())
    assert attributes == {"case:channel": "web", "org:resource": "r1", "amount": "12"}


def test_mapped_columns_optional_columns_and_attribute_flags(tmp_path):
    text = (
        "Ticket;Step;When;Medium;Agent;Priority;Team\n"
        "T1;Open ticket;2024-05-01 09:00:00;mail;ann;high;\n"
        "T1;Close ticket;2024-05-01 10:00:00;phone;bob;high;blue\n"
    )
    path = write(tmp_path, text)
    mapped = Columns(case="Ticket", activity="Step", timestamp="When")
    log = read_process_log(path, replace(mapped, channel="Medium", resource="Agent"))
    assert paths(log) == {"T1": ["Open ticket", "Close ticket"]}  # names exactly as logged
    assert [e.channel for e in log.events] == ["mail", "phone"]
    assert [e.resource for e in log.events] == ["ann", "bob"]
    assert [attrs for *_, attrs in log.stream()] == [
        {"Medium": "mail", "Agent": "ann", "Priority": "high", "Team": None},
        {"Medium": "phone", "Agent": "bob", "Priority": "high", "Team": "blue"},
    ]
    # only the attributes asked for (channel and resource always), or none
    log = read_process_log(
        path, replace(mapped, channel="Medium", resource="Agent", attributes=("Team",))
    )
    assert log.attribute_names == ("Medium", "Agent", "Team")
    log = read_process_log(path, replace(mapped, channel=None, resource=None, attributes=()))
    assert log.attribute_names == () and log.events[0].channel is None
    # the default channel and resource columns are optional: not in this file, not used
    log = read_process_log(path, mapped)
    assert log.columns["channel"] is None and log.columns["resource"] is None
    assert log.attribute_names == ("Medium", "Agent", "Priority", "Team")


@pytest.mark.parametrize(
    ("columns", "flag"),
    [
        (Columns(case="Case ID"), "--case-column"),
        (Columns(activity="Activity"), "--activity-column"),
        (Columns(timestamp="Start Time"), "--timestamp-column"),
        (Columns(channel="Medium"), "--channel-column"),  # named, so it must be there
        (Columns(resource="Agent"), "--resource-column"),
        (Columns(attributes=("Priority",)), "--attribute"),
    ],
)
def test_a_named_column_that_is_missing_is_an_error_naming_the_flag(tmp_path, columns, flag):
    path = write(tmp_path, f"{HEADER}\nA,x,2024-01-01 10:00,web,r1,1\n")
    with pytest.raises(LogError, match=flag) as info:
        read_process_log(path, columns)
    assert "case:concept:name" in str(info.value)  # it lists the columns there are


def test_delimiters_bom_quotes_and_gzip(tmp_path):
    rows = ['"A";"x, with comma";"2024-01-01 10:00";"web";"r";"1"', "A;y;2024-01-01 11:00;web;r;2"]
    text = HEADER.replace(",", ";") + "\n" + "\n".join(rows) + "\n"
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert paths(read_process_log(path)) == {"A": ["x, with comma", "y"]}
    tabbed = write(tmp_path, text.replace(";", "\t"), "tabbed.tsv")
    assert paths(read_process_log(tabbed)) == {"A": ["x, with comma", "y"]}
    packed = tmp_path / "log.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    assert paths(read_process_log(packed)) == {"A": ["x, with comma", "y"]}


def test_missing_file_and_wrong_encoding_are_errors_that_say_so(tmp_path):
    with pytest.raises(LogError, match="no such log file"):
        read_process_log(tmp_path / "nope.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"{HEADER}\nA,Ã©tape caf\xe9,2024-01-01 10:00,web,r,\n".encode("latin-1"))
    with pytest.raises(LogError, match="--encoding"):
        read_process_log(latin)
    assert read_process_log(latin, encoding="latin-1").events[0].activity == "Ã©tape café"


# --------------------------------------------------------------------------- event files
def test_event_files_read_as_customer_journeys_of_touchpoints(tmp_path):
    events = [
        ev("page_view", "web", minutes=2, customer="c1", touchpoint="plans"),
        ev("page_view", "web", minutes=0, customer="c1", touchpoint="home", event_id="dup"),
        ev("login", "app", minutes=1, customer="c1"),  # no touchpoint
        ev("page_view", "web", minutes=1, customer=None, anon="dev-9", touchpoint="home"),
        ev("call", "ivr", minutes=3, customer="c1", touchpoint="ivr_sales"),
        ev("call", "ivr", minutes=4, customer="c2", touchpoint="ivr_sales"),
        ev("chat", "chat", minutes=5, customer="c2", touchpoint="chat"),
        ev("erase", "web", minutes=6, customer="c2"),
        ev("chat", "chat", minutes=7, customer="c2", touchpoint="chat_again"),
    ]
    body = [wire(e) for e in events]
    body.insert(2, wire(events[1]))  # the same event twice
    body.insert(4, b'{"event_id": "broken"')
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(body) + b"\n")

    log = read_event_file(path)
    assert paths(log) == {
        "c1": ["home", "plans", "ivr_sales"],
        "anon:dev-9": ["home"],
        "c2": ["chat_again"],  # what c2 did before the erasure is gone
    }
    assert [e.channel for e in log.cases()["c1"]] == ["web", "web", "ivr"]
    _case, _activity, _ts, attributes = next(log.stream())
    assert attributes == {"channel": "web", "type": "page_view", "partner_id": None}
    assert log.skipped[DUPLICATE] == 1
    assert log.skipped[NO_TOUCHPOINT] == 1
    assert log.skipped[ERASED] == 2
    assert log.skipped["invalid event"] == 1
    assert log.rows == 11


# --------------------------------------------------------------------------- into the replay
def test_default_goal_is_the_most_frequent_last_activity_ties_by_name(tmp_path):
    rows = [
        "A,open,2024-01-01 10:00,web,r,",
        "A,paid,2024-01-01 10:05,web,r,",
        "B,open,2024-01-01 11:00,web,r,",
        "B,left,2024-01-01 11:05,web,r,",
        "C,open,2024-01-01 12:00,web,r,",
    ]
    log = read_process_log(write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"))
    assert default_goal(log.cases()) == "left"  # 1 each for left, open, paid: by name
    more = [*rows, "D,paid,2024-01-01 13:00,web,r,"]
    log = read_process_log(write(tmp_path, HEADER + "\n" + "\n".join(more) + "\n"))
    assert default_goal(log.cases()) == "paid"


def test_replay_in_process_writes_the_contract_files(tmp_path, capsys):
    rows = [
        "A,open,2024-01-01T10:00:00+01:00,web,r,",
        "B,open,2024-01-01 09:30,app,r,",
        "A,paid,2024-01-01 10:05,app,r,",
        "B,paid,2024-01-01 09:40,app,r,",
        "B,bad,later,app,r,",
    ]
    log = write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert wayfinder(["replay", str(log), "--out", str(out), "--goal", "paid"]) == 0
    edges = (out / "contact_map_edges.csv").read_text().splitlines()
    assert edges[0] == "scope,source,target,count,mean_seconds,p50_seconds,p90_seconds,goal_rate"
    # open -> paid takes 10 min (B) and 65 min (A: 10:00+01:00 is 09:00 UTC)
    assert edges[2].startswith("all,open,paid,2,2250.0,")
    counts = {tuple(line.split(",")[1:4]) for line in edges[1:]}
    assert counts == {("__start__", "open", "2"), ("open", "paid", "2"), ("paid", "__end__", "2")}
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["cases"], summary["events"], summary["contact_points"]) == (2, 4, 2)
    assert summary["skipped_rows"] == 1 and summary["goal"] == ["paid"]
    assert summary["case_duration_seconds"]["max"] == 65 * 60
    assert summary["kpis"]["channel_switches"] == 1  # A: web -> app
    assert "unreadable timestamp" in capsys.readouterr().out


def test_replay_refuses_a_goal_that_is_not_in_the_log(tmp_path, capsys):
    log = write(tmp_path, f"{HEADER}\nA,open,2024-01-01 10:00,web,r,\n")
    assert wayfinder(["replay", str(log), "--out", str(tmp_path / "out"), "--goal", "Paid"]) == 2
    assert "'Paid' is not in the log" in capsys.readouterr().out
