"""Pictures of the contact-point map: the DOT we write, and the SVG/PNG Graphviz draws."""

import math
import re
import sys
import xml.etree.ElementTree as ET

import msgspec
import pytest

from flows.analysis import pictures
from flows.analysis.pictures import PAIN_COLOUR
from flows.cli import main as wayfinder
from flows.runtime.map_files import canonical_json
from operators.contact_map import END, START, ContactMap, Step

HOUR = 3600.0


def case(cmap: ContactMap, points: list[str], *, goal: bool, gap: float = 60.0, scope="all"):
    steps = [Step(p, 1_000.0 + i * gap, "web") for i, p in enumerate(points)]
    cmap.add_case(scope, steps, goal=goal, outcome="completed" if goal else "abandoned")


def small_map() -> ContactMap:
    """home → search → buy (busy, always the goal); home → help (quiet, never the goal);
    `help` is where people give up: a pain point."""
    cmap = ContactMap()
    for _ in range(40):
        case(cmap, ["home", "search", "buy"], goal=True)
    for _ in range(6):
        case(cmap, ["home", "help"], goal=False, gap=2 * HOUR)
    for _ in range(4):
        case(cmap, ["home", "search", "help"], goal=False)
    return cmap


EDGE = re.compile(r'^\s*"(?P<s>[^"]*)" -> "(?P<t>[^"]*)" \[(?P<attrs>.*)\];$', re.M)
NODE = re.compile(r'^\s*"(?P<n>[^"]*)" \[(?P<attrs>.*)\];$', re.M)


def attrs(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)', text)}


def edges(dot: str) -> dict[tuple[str, str], dict[str, str]]:
    return {(m["s"], m["t"]): attrs(m["attrs"]) for m in EDGE.finditer(dot)}


def nodes(dot: str) -> dict[str, dict[str, str]]:
    return {m["n"]: attrs(m["attrs"]) for m in NODE.finditer(dot)}


def test_edge_width_grows_with_volume_on_a_log_scale():
    dot = pictures.map_dot(small_map(), "all", min_count=1)
    drawn = edges(dot)
    busy = float(drawn[("home", "search")]["penwidth"])  # 44 moves
    buy = float(drawn[("search", "buy")]["penwidth"])  # 40 moves
    quiet = float(drawn[("home", "help")]["penwidth"])  # 6 moves
    assert busy > buy > quiet >= 1.0
    assert float(drawn[(START, "home")]["penwidth"]) == 9.0  # the busiest edge: 50 moves
    # log scale: 6 moves get log(6)/log(44) of the range, far more than 6/44 of it
    assert quiet - 1 == pytest.approx(8 * math.log(6) / math.log(50), abs=0.01)
    assert pictures.pen_width(1, 1000) == 1.0
    assert pictures.pen_width(1000, 1000) == 9.0


def test_edge_colour_follows_the_goal_rate_red_amber_green():
    drawn = edges(pictures.map_dot(small_map(), "all", min_count=1))
    assert drawn[("search", "buy")]["color"] == "#1a9850"  # every case reached the goal
    assert drawn[("home", "help")]["color"] == "#d7301f"  # none did
    home_search = 40 / 44  # mostly green, a little amber
    assert drawn[("home", "search")]["color"] == pictures.goal_colour(home_search)
    assert pictures.goal_colour(0.5) == "#f0a500"  # amber in the middle
    dot = pictures.map_dot(small_map(), "all")
    assert "goal rate" in dot and "#d7301f" in dot and "#1a9850" in dot  # the legend


def test_pain_points_are_marked_and_start_end_are_small_round_nodes():
    cmap = small_map()
    assert any(p["where"] == "help" for p in cmap.pain_points("all"))
    drawn = nodes(pictures.map_dot(cmap, "all", min_count=1))
    help_node = drawn["help"]
    assert help_node["color"] == PAIN_COLOUR and help_node["penwidth"] == "3"
    assert help_node["label"].startswith("⚠ help")
    assert "10 visits" in help_node["label"]
    assert "pain point: drop-off" in help_node["tooltip"]
    assert "⚠" not in drawn["buy"]["label"] and "color" not in drawn["buy"]
    assert drawn[START]["shape"] == "circle" and drawn[END]["shape"] == "doublecircle"
    assert drawn[START]["fixedsize"] == "true"
    # the PNG fonts have no ⚠: PNGs are marked with ▲
    png = nodes(pictures.map_dot(cmap, "all", min_count=1, mark=pictures.PNG_MARK))
    assert png["help"]["label"].startswith("▲ help")


def test_edge_labels_have_the_count_and_the_median_time_in_human_units():
    drawn = edges(pictures.map_dot(small_map(), "all", min_count=1))
    assert drawn[("home", "help")]["label"] == "⚠ 6 · 2.1 h"  # p50 of 2 h, within 9 %; a long wait
    assert drawn[("search", "buy")]["label"] == "40 · 58 s"  # 60 s, in its bin
    assert drawn[(START, "home")]["label"] == "50"  # no time on start and end edges
    assert pictures.human_duration(0) == "0 s"
    assert pictures.human_duration(42) == "42 s"
    assert pictures.human_duration(330) == "5.5 min"
    assert pictures.human_duration(3 * HOUR) == "3.0 h"
    assert pictures.human_duration(36 * HOUR) == "1.5 d"
    assert pictures.human_duration(40 * 86400) == "40 d"


def busy_map() -> ContactMap:
    """A main road and a long tail of rare detours: 1 + 30 distinct side paths."""
    cmap = ContactMap()
    for _ in range(300):
        case(cmap, ["a", "b", "c"], goal=True)
    for i in range(30):
        case(cmap, ["a", f"side{i}", "c"], goal=False)
    return cmap


def test_busy_maps_keep_the_main_traffic_and_say_what_they_hid():
    cmap = busy_map()
    scope = cmap.scopes["all"]
    chosen = pictures.select_edges(scope)  # default: ~95 % of moves, at most 60 edges
    assert len(scope.edges) == 4 + 30 * 2
    assert set(chosen.kept[:4]) == {f"{START}\x1fa", "a\x1fb", "b\x1fc", f"c\x1f{END}"}
    assert chosen.kept_moves / chosen.total_moves >= 0.95
    assert len(chosen.kept) < len(scope.edges)
    dot = pictures.map_dot(cmap, "all")
    drawn = edges(dot)
    assert ("a", "b") in drawn and ("b", "c") in drawn
    hidden = len(scope.edges) - len(drawn)
    assert f"Hidden: {hidden} of {len(scope.edges)} transitions" in dot
    assert "covering 95% of traffic" in dot
    assert "contact points" in dot  # the side paths' nodes went with their edges

    dot = pictures.map_dot(cmap, "all", min_count=2)  # only the main road
    assert set(edges(dot)) == {(START, "a"), ("a", "b"), ("b", "c"), ("c", END)}
    assert "Hidden: 60 of 64 transitions (60 moves" in dot
    assert "edges with at least 2 moves" in dot

    dot = pictures.map_dot(cmap, "all", min_count=1, max_edges=10)
    assert len(edges(dot)) == 10 and "at most 10" in dot

    everything = pictures.map_dot(small_map(), "all", min_count=1)
    assert "Hidden" not in everything


def test_names_that_need_quoting_are_drawn(tmp_path):
    cmap = ContactMap()
    for _ in range(3):
        case(cmap, ['say "hi"', "back\\slash", "<html> & co"], goal=True)
    paths = pictures.render_map(cmap, "all", tmp_path)
    svg = ET.parse(paths[0]).getroot()
    text = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert 'say "hi"' in text and "back\\slash" in text and "<html> & co" in text


def test_svg_and_png_are_written(tmp_path):
    cmap = small_map()
    cmap.add_case("money transfer/web", [Step("x", 0.0), Step("y", 5.0)], goal=True)
    paths = pictures.render_map(cmap, "all", tmp_path / "pics")
    assert [p.name for p in paths] == ["map-all.svg", "map-all.png"]
    svg = ET.parse(paths[0]).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    titles = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")}
    assert {"home", "search", "buy", "help"} <= titles
    png = paths[1].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    other = pictures.render_map(cmap, "money transfer/web", tmp_path / "pics")
    assert other[0].name == "map-money_transfer_web.svg" and other[1].exists()


def command(argv: list[str]) -> int:
    """`wayfinder ARGV`, in this process."""
    return wayfinder(argv)


def test_map_command_writes_the_pictures_of_a_scope_and_prints_their_paths(tmp_path, capsys):
    cmap = small_map()
    case(cmap, ["home", "search", "buy"], goal=True, scope="shopping")
    saved = tmp_path / "run" / "contact_map.json"
    saved.parent.mkdir()
    saved.write_bytes(canonical_json(cmap))
    assert msgspec.json.decode(saved.read_bytes(), type=ContactMap) == cmap

    assert command(["map", "--map", str(saved), "--scope", "shopping", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "map-shopping.svg"), str(tmp_path / "map-shopping.png")]
    assert all((tmp_path / f"map-shopping.{ext}").stat().st_size > 0 for ext in ("svg", "png"))

    assert command(["map", "--map", str(saved.parent), "--min-count", "5"]) == 0  # default: all
    assert (saved.parent / "map-all.svg").exists()

    assert command(["map", "--map", str(saved), "--scope", "nope"]) == 2
    error = capsys.readouterr().err
    assert "no scope 'nope'" in error and "all, shopping" in error
    assert command(["map", "--map", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_map_command_has_help(capsys):
    with pytest.raises(SystemExit) as done:
        command(["map", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--map", "--scope", "--out", "--min-count", "--max-edges"):
        assert flag in text


def test_a_missing_graphviz_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # pictures looks here
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pictures.GraphvizMissing, match="pip install graphviz-pure"):
        pictures.find_graphviz()
    dot = tmp_path / "dot"
    dot.write_text("#!/bin/sh\n")
    dot.chmod(0o755)
    assert pictures.find_graphviz() == str(dot)  # a system Graphviz will do
