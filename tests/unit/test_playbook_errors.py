"""Every way a playbook can be wrong is a PlaybookError naming the file, the entry and the
field (never a traceback), and the command prints it as the text it is."""

import copy
import math
import string
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.cli.main import main
from flows.runtime.settings import DEFAULT_PLAYBOOK
from operators.playbook import compile_playbook
from schemas.playbook import PlaybookError, load_playbook, parse_playbook
from tests.e2e.cli import run_failing

TEXT = DEFAULT_PLAYBOOK.read_text()
BASE: dict[str, Any] = tomllib.loads(TEXT)

Raw = dict[str, Any]


def base() -> Raw:
    return copy.deepcopy(BASE)


def entry_of(raw: Raw, section: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in raw[section] if e["name"] == name)
    return found


def problems(raw: Raw) -> list[tuple[str, str | None, str]]:
    """(entry, field, problem) of every problem, in order."""
    with pytest.raises(PlaybookError) as info:
        parse_playbook(raw, "pb.toml")
    assert all(p.file == "pb.toml" for p in info.value.problems)
    return [(p.entry, p.field, p.problem) for p in info.value.problems]


def only_problem(raw: Raw) -> tuple[str, str | None, str]:
    found = problems(raw)
    assert len(found) == 1, found
    return found[0]


def file_problem(path: Path) -> str:
    """The one problem of a file that cannot be read as TOML (entry "file", no field)."""
    with pytest.raises(PlaybookError) as info:
        load_playbook(path)
    (problem,) = info.value.problems
    assert (problem.file, problem.entry, problem.field) == (str(path), "file", None)
    assert str(info.value).startswith(f"{path}: file: ")
    return problem.problem


def with_quiet_hours(**fields: object) -> Raw:
    raw = base()
    raw["policies"]["quiet_hours"] = {**raw["policies"]["quiet_hours"], **fields}
    return raw


# ---------------------------------------------------------------- the file itself


def test_a_directory_given_as_the_playbook_path_is_an_error_naming_the_file(tmp_path: Path):
    assert file_problem(tmp_path) == "is a directory, not a playbook file"


def test_a_missing_or_unreachable_file_is_an_error_naming_the_file(tmp_path: Path):
    assert file_problem(tmp_path / "nope.toml") == "no such file"
    a_file = tmp_path / "pb.toml"
    a_file.write_text(TEXT)
    assert file_problem(a_file / "pb.toml") == "cannot be read: Not a directory"


def test_a_file_that_is_not_utf8_is_an_error_naming_the_byte_and_line(tmp_path: Path):
    latin1 = tmp_path / "pb.toml"
    latin1.write_bytes(TEXT.encode() + b"\n# caf\xe9\n")
    line = TEXT.count("\n") + 2
    assert file_problem(latin1) == f"not UTF-8 text: byte 0xe9 on line {line} (save it as UTF-8)"


def test_a_file_that_is_not_toml_is_an_error_naming_the_line(tmp_path: Path):
    bad = tmp_path / "pb.toml"
    bad.write_text(TEXT + "\nthis is not = = toml\n")
    problem = file_problem(bad)
    assert problem.startswith("not valid TOML: ") and "line" in problem


@pytest.mark.parametrize("depth", [3_000, 100_000])
def test_a_3000_deep_toml_array_is_an_error_not_a_recursion_error(tmp_path: Path, depth: int):
    deep = tmp_path / "pb.toml"
    deep.write_text(TEXT + "\nnested = " + "[" * depth + "]" * depth + "\n")
    assert file_problem(deep) == "not usable TOML: arrays or tables nested too deeply"
    tables = tmp_path / "tables.toml"
    tables.write_text("x = " + "{a = " * depth + "1" + "}" * depth + "\n")
    assert file_problem(tables) == "not usable TOML: arrays or tables nested too deeply"


# ---------------------------------------------------------------- time zones


@pytest.mark.parametrize("zone", ["Europe", "America", "Etc"])
def test_a_time_zone_that_is_a_tzdata_folder_is_an_error_naming_the_entry(zone: str):
    entry, field, problem = only_problem(with_quiet_hours(default_timezone=zone))
    assert (entry, field) == ("policies", "quiet_hours.default_timezone")
    assert problem.startswith(f"'{zone}' is a region, not a time zone: name a zone in it, e.g. ")
    assert f"'{zone}/" in problem


@pytest.mark.parametrize(
    "zone",
    [
        "",  # ValueError: not a normalised key
        "Mars/Olympus_Mons",  # ZoneInfoNotFoundError
        "/etc/localtime",  # ValueError: absolute
        "Europe/../UTC",  # ValueError: not normalised
        "__init__.py",  # ValueError: a file of the tzdata package, not a zone
        "x" * 300,  # OSError: file name too long
        "Europe/Paris\x00",  # ValueError: embedded NUL
        "utc ",
    ],
)
def test_an_unknown_time_zone_is_an_error_naming_the_entry(zone: str):
    entry, field, problem = only_problem(with_quiet_hours(default_timezone=zone))
    assert (entry, field) == ("policies", "quiet_hours.default_timezone")
    assert problem.startswith("unknown time zone ")


def test_quiet_hours_that_start_when_they_end_are_an_error():
    entry, field, problem = only_problem(with_quiet_hours(start="21:00", end="21:00"))
    assert (entry, field) == ("policies", "quiet_hours.end")
    assert "quiet all day" in problem


# ---------------------------------------------------------------- durations


def _journey_field(field: str) -> Callable[[Raw, str], None]:
    def edit(raw: Raw, value: str) -> None:
        entry_of(raw, "journeys", "device_activation")[field] = value

    return edit


def _action_field(field: str) -> Callable[[Raw, str], None]:
    def edit(raw: Raw, value: str) -> None:
        entry_of(raw, "actions", "priority_agent")[field] = value

    return edit


def _trigger_within(raw: Raw, value: str) -> None:
    entry_of(raw, "actions", "priority_agent")["when"][0]["within"] = value


def _policy(*path: str) -> Callable[[Raw, str], None]:
    def edit(raw: Raw, value: str) -> None:
        target = raw["policies"]
        for key in path[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[path[-1]] = value

    return edit


#: Every duration a playbook reads: how to set it, and the entry and field named.
DURATIONS: dict[str, tuple[Callable[[Raw, str], None], str, str]] = {
    "abandon": (_journey_field("abandon"), "journeys 'device_activation'", "abandon"),
    "stall": (_journey_field("stall"), "journeys 'device_activation'", "stall"),
    "cooldown": (_action_field("cooldown"), "actions 'priority_agent'", "cooldown"),
    "expires": (_action_field("expires"), "actions 'priority_agent'", "expires"),
    "within": (_trigger_within, "actions 'priority_agent'", "when[0].within"),
    "cap per": (_policy("caps", "0", "per"), "policies", "caps[0].per"),
    "fatigue within": (_policy("fatigue", "within"), "policies", "fatigue.within"),
    "fatigue pause": (_policy("fatigue", "pause"), "policies", "fatigue.pause"),
    "attribution": (_policy("attribution"), "policies", "attribution"),
}


@pytest.mark.parametrize("where", DURATIONS)
@pytest.mark.parametrize("value", ["0s", "0ms", "0.0h", "0d0m"])
def test_a_zero_duration_is_an_error_naming_the_entry_and_field(where: str, value: str):
    edit, entry, field = DURATIONS[where]
    raw = base()
    edit(raw, value)
    found = only_problem(raw)
    assert found[:2] == (entry, field)
    assert found[2].startswith(f"must be longer than 0s, not '{value}'")


@pytest.mark.parametrize("where", DURATIONS)
@pytest.mark.parametrize("value", ["99999999999999999999w", "3651d", "9" * 400 + "s"])
def test_a_duration_too_long_for_a_clock_is_an_error_naming_the_entry_and_field(
    where: str, value: str
):
    edit, entry, field = DURATIONS[where]
    raw = base()
    edit(raw, value)
    assert only_problem(raw) == (entry, field, f"'{value}' is too long: at most 3650d (ten years)")


@pytest.mark.parametrize("where", DURATIONS)
@pytest.mark.parametrize("value", ["-1d", "1 d", "", "1e3s", "1y"])
def test_a_duration_that_is_not_one_is_an_error_naming_the_entry_and_field(where: str, value: str):
    edit, entry, field = DURATIONS[where]
    raw = base()
    edit(raw, value)
    found = problems(raw)
    assert len(found) == 1 and found[0][0] == entry and field in str(found[0][1])


def test_the_longest_duration_allowed_still_loads():
    raw = base()
    for edit, _, _ in DURATIONS.values():
        edit(raw, "3650d")
    entry_of(raw, "journeys", "device_activation")["stall"] = "1ms"
    compile_playbook(parse_playbook(raw, "pb.toml"))


# ---------------------------------------------------------------- names declared twice


def test_a_duplicated_channel_is_an_error_naming_the_entry():
    raw = base()
    raw["channels"] = [*raw["channels"], "sms"]
    assert only_problem(raw) == ("playbook", "channels", "channel 'sms' listed twice")


@pytest.mark.parametrize(
    ("setting", "what"), [("intents", "intent"), ("profile_properties", "property")]
)
def test_a_name_declared_twice_in_a_top_level_list_is_an_error(setting: str, what: str):
    raw = base()
    raw[setting] = [*raw[setting], raw[setting][0]]
    assert only_problem(raw) == ("playbook", setting, f"{what} '{raw[setting][0]}' listed twice")


@pytest.mark.parametrize(
    ("section", "name"),
    [
        ("actions", "priority_agent"),
        ("contact_points", "home"),
    ],
)
def test_a_channel_listed_twice_in_an_entry_is_an_error_naming_the_entry(section: str, name: str):
    raw = base()
    entry = entry_of(raw, section, name)
    entry["channels"] = [*entry["channels"], entry["channels"][0]]
    ch = entry["channels"][0]
    assert only_problem(raw) == (f"{section} '{name}'", "channels", f"channel '{ch}' listed twice")


@pytest.mark.parametrize("section", ["contact_points", "journeys", "segments", "actions"])
def test_an_entry_declared_twice_is_an_error_naming_the_entry(section: str):
    raw = base()
    first = raw[section][0]
    raw[section].append(copy.deepcopy(first))
    assert (f"{section} '{first['name']}'", "name", "declared twice") in problems(raw)


def test_a_milestone_declared_twice_is_an_error_naming_the_journey():
    raw = base()
    journey = entry_of(raw, "journeys", "money_transfer")
    journey["milestones"].append(copy.deepcopy(journey["milestones"][0]))
    assert only_problem(raw) == (
        "journeys 'money_transfer'",
        "milestones",
        "milestone names must be unique",
    )


# ---------------------------------------------------------------- types and numbers


@pytest.mark.parametrize(
    ("edit", "entry", "field"),
    [
        (lambda raw: raw.update(version=3), "playbook", "version"),
        (lambda raw: raw.update(channels="web"), "playbook", "channels"),
        (lambda raw: raw.update(channels=["Web"]), "playbook", "channels[0]"),
        (lambda raw: raw.update(policies=[]), "playbook", "policies"),
        (lambda raw: raw.update(journeys={"a": 1}), "journeys", None),
        (lambda raw: raw["journeys"].append(7), f"journeys[{len(BASE['journeys'])}]", None),
        (
            lambda raw: entry_of(raw, "journeys", "money_transfer").update(priority="high"),
            "journeys 'money_transfer'",
            "priority",
        ),
        (
            lambda raw: entry_of(raw, "actions", "priority_agent").update(
                when=[{"within": datetime(2026, 1, 1, tzinfo=UTC)}]
            ),
            "actions 'priority_agent'",
            "when[0].within",
        ),
        (
            lambda raw: raw["policies"]["caps"][0].update(max=-1),
            "playbook",
            "policies.caps[0].max",
        ),
        (lambda raw: raw.update(lifecycle={"new_days": 0}), "playbook", "lifecycle.new_days"),
    ],
)
def test_a_value_of_the_wrong_type_or_range_is_an_error_naming_the_entry_and_field(
    edit: Callable[[Raw], None], entry: str, field: str | None
):
    raw = base()
    edit(raw)
    assert only_problem(raw)[:2] == (entry, field)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize(
    ("edit", "entry", "field"),
    [
        (
            lambda raw, x: entry_of(raw, "actions", "priority_agent").update(value=x),
            "actions 'priority_agent'",
            "value",
        ),
        (
            lambda raw, x: entry_of(raw, "actions", "priority_agent").update(lever=x),
            "actions 'priority_agent'",
            "lever",
        ),
        (
            lambda raw, x: entry_of(raw, "contact_points", "home").update(cost=x),
            "contact_points 'home'",
            "cost",
        ),
        (
            lambda raw, x: entry_of(raw, "segments", "high_value").update(min_lifetime_value=x),
            "segments 'high_value'",
            "min_lifetime_value",
        ),
        (
            lambda raw, x: raw["lifecycle"].update(dormant_days=x),
            "lifecycle",
            "dormant_days",
        ),
        (
            lambda raw, x: entry_of(raw, "actions", "priority_agent")["content"].update(n=x),
            "actions 'priority_agent'",
            "content",
        ),
        (
            lambda raw, x: entry_of(raw, "journeys", "money_transfer")["goal"][0].update(
                properties={"amount": x}
            ),
            "journeys 'money_transfer'",
            "goal[0].properties",
        ),
    ],
)
def test_a_number_that_is_not_finite_is_an_error_naming_the_entry_and_field(
    edit: Callable[[Raw, float], None], entry: str, field: str, bad: float
):
    raw = base()
    edit(raw, bad)
    found = problems(raw)
    assert len(found) == 1 and found[0][0] in (entry, "playbook") and field in str(found[0][1])


@pytest.mark.parametrize("policy", ["caps", "quiet_hours", "fatigue"])
def test_a_policy_for_no_purpose_is_an_error(policy: str):
    raw = base()
    target = raw["policies"][policy]
    (target[0] if policy == "caps" else target)["purposes"] = []
    field = "caps[0].purposes" if policy == "caps" else f"{policy}.purposes"
    assert only_problem(raw)[:2] == ("policies", field)


# ---------------------------------------------------------------- the command


def _bad_playbook(tmp_path: Path) -> Path:
    """A playbook with an upper-case channel: the problem quotes the pattern [a-z0-9]..."""
    bad = tmp_path / "[bold]pb.toml"
    bad.write_text(TEXT.replace('channels = ["web", "app",', 'channels = ["Web", "app",', 1))
    return bad


def test_the_command_prints_a_playbook_error_as_text_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    bad = _bad_playbook(tmp_path)
    assert main(["run", "--playbook", str(bad), "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"playbook error: {bad}: playbook: field 'channels[0]': ")
    assert "[a-z0-9]" in err and "[bold]" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["run"], ["playbook"]])
def test_the_command_names_a_directory_or_tzdata_folder_without_a_traceback(
    tmp_path: Path, command: list[str]
):
    """As a user runs it: a folder as the playbook, then a quiet-hours zone that is a folder."""
    folder_zone = tmp_path / "pb.toml"
    folder_zone.write_text(
        TEXT.replace(
            'quiet_hours = { start = "21:00", end = "08:00",',
            'quiet_hours = { default_timezone = "Europe", start = "21:00", end = "08:00",',
        )
    )
    for path, said in [
        (tmp_path, f"{tmp_path}: file: is a directory"),
        (folder_zone, "policies: field 'quiet_hours.default_timezone': 'Europe' is a region"),
    ]:
        args = [*command, "--playbook", str(path)] if command == ["run"] else [*command, str(path)]
        done = run_failing(*args)
        assert done.returncode == 2, done.stderr
        assert said in done.stderr
        assert "Traceback" not in done.stderr + done.stdout


# ---------------------------------------------------------------- any mutation


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key and index inside the playbook's data."""
    found: list[tuple[str | int, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        found.append((*prefix, key))
        if isinstance(child, (dict, list)):
            found.extend(_paths(child, (*prefix, key)))
    return found


PATHS = _paths(BASE)

#: Values TOML can hold: strings, 64-bit integers, floats (inf and nan too), booleans,
#: dates and times, arrays and tables.
_WORDS = st.sampled_from(
    ["web", "sms", "Europe", "0s", "3651d", "99999999999999999999w", "", "[a-z0-9]", "7d"]
)
TOML_SCALARS = st.one_of(
    _WORDS,
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.dates(),
    st.times(),
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["name", "per", "channels", "x"]), inner, max_size=3)
    ),
    max_leaves=6,
)


def _mutate(raw: Raw, path: tuple[str | int, ...], how: str, value: Any) -> None:
    parent: Any = raw
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if how == "delete":
        del parent[key]
    elif how == "duplicate" and isinstance(parent, list) and isinstance(key, int):
        parent.append(copy.deepcopy(parent[key]))
    else:
        parent[key] = value


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(PATHS),
        st.sampled_from(["replace", "replace", "delete", "duplicate"]),
        TOML_VALUES,
    ),
    min_size=1,
    max_size=3,
)


@pytest.mark.fuzz
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MUTATIONS)
def test_any_mutation_of_the_default_playbook_loads_or_is_a_playbook_error(
    mutations: list[tuple[tuple[str | int, ...], str, Any]],
):
    raw = base()
    for path, how, value in mutations:
        try:
            _mutate(raw, path, how, value)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed the path
            continue
    try:
        playbook = parse_playbook(raw, "pb.toml")
    except PlaybookError as exc:
        assert exc.problems and all(p.file == "pb.toml" for p in exc.problems)
        return
    compile_playbook(playbook)  # what loads also compiles


@pytest.mark.fuzz
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=0, max_value=len(TEXT)),
    st.integers(min_value=0, max_value=40),
    st.text(alphabet=string.printable + "é\x00\udcff", max_size=12)
    | st.sampled_from(["[" * 2000, "Europe", "0s", '"\n[[journeys]]\n']),
)
def test_any_edit_of_the_default_playbook_file_loads_or_is_a_playbook_error(
    tmp_path_factory: pytest.TempPathFactory, at: int, cut: int, insert: str
):
    path = tmp_path_factory.mktemp("pb") / "pb.toml"
    text = TEXT[:at] + insert + TEXT[at + cut :]
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    try:
        playbook = load_playbook(path)
    except PlaybookError as exc:
        assert exc.problems and all(p.file == str(path) for p in exc.problems)
        return
    compile_playbook(playbook)
