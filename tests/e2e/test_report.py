"""The HTML report, opened as a person opens it: in a real (headless) Chromium.

Chromium is Debian's `chromium` package; the test installs it when it is missing
(`tests.debian`) and fails, never skips, when it cannot. The network
is closed here, so Chromium runs with everything that would call home turned off.
Screenshots are kept under `.artifacts/` in the repository.
"""

import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from flows.analysis.report import inline_svg, render_report, write_report
from operators.contact_map import ContactMap, Step
from tests.debian import debian_program
from tests.e2e.cli import REPO

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / ".artifacts"
MIN, HOUR, DAY = 60.0, 3600.0, 86400.0


# --------------------------------------------------------------------------- chromium
@pytest.fixture(scope="session")
def chromium() -> str:
    return debian_program("chromium", "chromium", "chromium-browser")


def headless(
    chromium: str, url: str, profile: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on a page, with nothing that reaches the network."""
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def script_errors(stderr: str) -> list[str]:
    """Uncaught exceptions and console messages that Chromium logged for the page."""
    return [
        line
        for line in stderr.splitlines()
        if "Uncaught" in line or ":CONSOLE" in line or "console.error" in line
    ]


class Dom(HTMLParser):
    """Elements by id, with the tags and text inside each (enough to check a page)."""

    VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "col", "wbr", "source"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, dict[str, Any]] = {}
        self._open: list[tuple[str, dict[str, Any] | None]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for _tag, info in self._open:
            if info is not None:
                info["tags"].append(tag)
        info = None
        if "id" in attributes:
            info = self.ids[attributes["id"]] = {
                "tag": tag,
                "attrs": attributes,
                "tags": [],
                "text": [],
            }
        if tag not in self.VOID:
            self._open.append((tag, info))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                return

    def handle_data(self, data):
        for _tag, info in self._open:
            if info is not None:
                info["text"].append(data)

    def text(self, element_id: str) -> str:
        return " ".join(" ".join(self.ids[element_id]["text"]).split())

    def count(self, element_id: str, tag: str) -> int:
        tags: list[str] = self.ids[element_id]["tags"]
        return tags.count(tag)


# --------------------------------------------------------------------------- the data
def realistic_map() -> ContactMap:
    """Two journeys and `all`, with loops, channel switches, drop-offs, partners, sentiment."""
    cmap = ContactMap()
    t0 = 1_780_000_000.0

    def case(journey, visits, *, goal, partner=None, sentiment=None):
        steps, t = [], t0
        for point, channel, wait in visits:
            t += wait
            steps.append(Step(point, t, channel))
        outcome = "completed" if goal else "abandoned"
        for scope in (journey, "all"):
            cmap.add_case(
                scope, steps, goal=goal, outcome=outcome, partner=partner, sentiment=sentiment
            )

    visits: list[tuple[str, str, float]]
    for i in range(40):  # money transfer: the happy path, with some help on the way
        visits = [("transfers", "web", 0), ("transfer_form", "web", 40 + i * 3)]
        if i % 4 == 0:
            visits += [("help_transfers", "web", 90), ("transfer_form", "web", 120)]
        visits += [("transfer_done", "web", 30 + i)]
        case("money_transfer", visits, goal=True, sentiment=0.4)
    for i in range(14):  # ... and the ones that loop, switch to IVR and give up
        visits = [
            ("transfers", "web", 0),
            ("transfer_form", "web", 60),
            ("help_transfers", "web", 200),
            ("transfer_form", "web", 100),
            ("ivr_payments", "ivr", 2 * HOUR + i * MIN),
        ]
        if i % 2:
            visits += [("chat_support", "chat", 30 * MIN), ("transfer_done", "web", 4 * HOUR)]
        case("money_transfer", visits, goal=bool(i % 2), sentiment=-0.7)
    for i in range(30):  # phone upgrade, partly through a dealer
        partner = ("dealer_north", "dealer_south", None)[i % 3]
        visits = [
            ("phones", "app", 0),
            ("phone_detail", "app", 3 * MIN),
            ("phones", "app", 2 * MIN),
            ("phone_detail", "app", MIN),
        ]
        if partner:
            visits += [("store", "store", 2 * DAY + i * HOUR), ("order", "store", 20 * MIN)]
        else:
            visits += [("cart", "app", 5 * MIN)]
            if i % 2:
                visits += [("order", "app", 2 * MIN)]
        goal = visits[-1][0] == "order" and i % 5 != 0
        case("phone_upgrade", visits, goal=goal, partner=partner, sentiment=0.1 if goal else -0.4)
    return cmap


SUMMARY = {
    "cases": 84,
    "events": 512,
    "contact_points": 11,
    "next_step_accuracy": 0.71,
    "markov1_accuracy": 0.58,
    "ngram_accuracy": 0.64,
    "dead_letters": {"malformed_json": 2},
    "outputs": {"contact map": "/somewhere/contact_map.json"},
}


# --------------------------------------------------------------------------- the tests
def test_the_error_check_sees_a_script_error(chromium, tmp_path):
    """The page checks below mean something only if a failing script is seen."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p id=x>x</p><script>"
        "document.getElementById('nothing').textContent = 1;</script></body></html>"
    )
    done = headless(chromium, page.as_uri(), tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-3000:]
    assert any("Uncaught" in line for line in script_errors(done.stderr)), done.stderr[-3000:]


def test_report_renders_in_chromium_with_map_and_tables(chromium, tmp_path):
    cmap = realistic_map()
    assert cmap.pain_points("money_transfer"), "the data should have a pain point to show"
    report = write_report(cmap, SUMMARY, tmp_path / "report.html", "Journeys — test report")
    text = report.read_text()

    # self-contained: nothing fetched from anywhere, no personal data in it
    assert not re.search(r"<(link|img|iframe)\b", text, re.I)
    assert not re.search(r"<script[^>]*\bsrc=", text, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", text, re.I)
    assert not re.search(r"url\(|@import|@font-face", text, re.I)
    assert "/somewhere/" not in text  # output paths of the summary are not figures

    started = time.monotonic()
    done = headless(chromium, report.as_uri(), tmp_path / "profile", "--dump-dom")
    launch_seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert not script_errors(done.stderr), "\n".join(script_errors(done.stderr))
    dom = Dom(done.stdout)

    assert dom.ids  # the DOM after scripts ran
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body and 'data-ready="1"' in body.group(0), "the report's script did not finish"
    assert "Journeys — test report" in dom.text("report-title")

    # summary figures and next-step accuracy, ours against the baselines
    summary = dom.text("report-summary")
    for figure in ("84", "512", "11", "malformed_json 2"):
        assert figure in summary
    accuracy = dom.text("accuracy")
    assert "71.0%" in accuracy and "58.0%" in accuracy and "64.0%" in accuracy
    assert dom.count("overview", "tr") == 1 + 3  # header and one row per scope

    for slug in ("all", "money_transfer", "phone_upgrade"):
        assert f"scope-{slug}" in dom.ids, f"no section for {slug}"
        # the map: an inline SVG with a node per contact point and the edges between them
        assert dom.count(f"map-{slug}", "svg") >= 1
        assert dom.count(f"map-{slug}", "g") > 10
        assert "start" in dom.text(f"map-{slug}") and "end" in dom.text(f"map-{slug}")
        # the KPI table, with every KPI
        kpis = dom.text(f"kpis-{slug}")
        for name in (
            "Started",
            "Completion rate",
            "Time to goal, mean",
            "Time to goal, p50",
            "Time to goal, p90",
            "Abandoned",
            "Loops",
            "Channel switches",
            "Sentiment",
        ):
            assert name in kpis, f"{name} missing from the KPIs of {slug}"
        assert dom.count(f"kpis-{slug}", "tr") >= 12
        # time to goal histogram: bars drawn
        assert dom.ids[f"ttg-{slug}"]["tag"] == "svg"
        assert dom.count(f"ttg-{slug}", "rect") >= 2
        assert f"dropoff-{slug}" in dom.ids and f"partners-{slug}" in dom.ids
        assert f"pain-{slug}" in dom.ids

    kpis = dom.text("kpis-money_transfer")
    assert "54" in kpis  # started: 40 + 14 cases
    assert "help_transfers" in dom.text("map-money_transfer")
    pains = dom.text("pain-money_transfer")
    assert "transfer_form" in pains or "ivr_payments" in pains
    assert "⚠" in dom.text("map-money_transfer")
    assert "dealer_north" in dom.text("partners-phone_upgrade")
    assert "ivr_payments" in dom.text("dropoff-money_transfer")
    # the first scope is shown, the others wait behind their tab
    assert "active" in dom.ids["scope-all"]["attrs"].get("class", "")
    assert "active" not in dom.ids["scope-phone_upgrade"]["attrs"].get("class", "")

    # screenshots, kept as test artefacts (the overview, and one journey's tab)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(report, ARTIFACTS / "report.html")
    for name, url in (
        ("report.png", report.as_uri()),
        ("report-money_transfer.png", report.as_uri() + "#scope-money_transfer"),
    ):
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        done = headless(
            chromium,
            url,
            tmp_path / f"profile-{name}",
            f"--screenshot={shot}",
            "--window-size=1400,2000",
            "--hide-scrollbars",
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert not script_errors(done.stderr), "\n".join(script_errors(done.stderr))
        assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000  # a page, not a blank
    print(f"chromium --dump-dom took {launch_seconds:.1f} s; screenshots in {ARTIFACTS}")


# --------------------------------------------------------------------------- no chromium
EVIL = "<script>alert(1)</script>"


def hostile_map() -> ContactMap:
    """Names from the data that are markup: a contact point, a journey and a partner."""
    cmap = ContactMap()
    for i in range(8):
        steps = [Step("home", 0.0, "web"), Step(EVIL, 60.0, "web"), Step("done", 600.0 + i, "app")]
        for scope in ("all", '<img src=x onerror="alert(2)">'):
            cmap.add_case(scope, steps, goal=i % 2 == 0, outcome="completed", partner="<b>shop</b>")
    return cmap


def test_names_from_the_data_are_escaped():
    summary = {"cases": 8, "<i>key</i>": "<b>value</b>", "dead_letters": {"<u>kind</u>": 1}}
    text = render_report(hostile_map(), summary, f"Report {EVIL}")

    assert "<script>alert" not in text
    assert text.count("<script") == 1  # ours, at the end
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    for markup in ("<img", "<b>shop", "<i>key", "<b>value", "<u>kind"):
        assert markup not in text
    dom = Dom(text)
    assert EVIL in dom.text("report-title")
    assert EVIL in dom.text("map-all")  # the node's label in the map's SVG
    assert EVIL in dom.text("dropoff-all") or EVIL in dom.text("edges-all")
    assert "<b>shop</b>" in dom.text("partners-all")
    summary_text = dom.text("report-summary")
    assert "<i>key</i>" in summary_text and "<b>value</b>" in summary_text
    assert "<u>kind</u> 1" in summary_text
    journey = next(i for i in dom.ids if i.startswith("scope-img"))
    assert '<img src=x onerror="alert(2)">' in dom.text(journey)


def test_several_maps_share_the_page_with_distinct_ids():
    text = render_report(realistic_map(), SUMMARY, "ids")
    ids = re.findall(r'\bid="([^"]*)"', text)
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert not set(re.findall(r'href="#([^"]*)"', text)) - set(ids)  # every link lands
    for slug in ("all", "money_transfer", "phone_upgrade"):
        assert f'id="m-{slug}-graph0"' in text  # each map's ids carry its scope
    assert "<?xml" not in text and "<!DOCTYPE svg" not in text and "<!--" not in text
    assert (REPO / "flows/analysis/templates/report.css").read_text() in text


def test_inlined_svg_keeps_to_its_own_ids_and_runs_nothing():
    svg = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<svg width="100pt" height="50pt" viewBox="0 0 100 50" onload="alert(3)"
 xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">
<defs><linearGradient id="g"/></defs>
<script>alert(4)</script>
<g id="node1" class="node"><title>a &lt;b&gt; &amp; c</title>
<a xlink:href="https://example.com/" xlink:title="tip"><rect fill="url(#g)"/></a>
<use xlink:href="#node1"/></g>
</svg>"""
    text = str(inline_svg(svg, "m-x", 'map of "x"'))
    assert text.startswith('<svg role="img" aria-label="map of &quot;x&quot;" class="map-svg"')
    assert 'data-width="100" style="max-width:100pt"' in text and 'width="100pt"' not in text
    assert "alert" not in text and "example.com" not in text and "comment" not in text
    assert 'id="m-x-node1"' in text and 'xlink:href="#m-x-node1"' in text
    assert 'id="m-x-g"' in text and 'fill="url(#m-x-g)"' in text
    assert "a &lt;b&gt; &amp; c" in text  # text stays escaped
    root = ET.fromstring(text)  # still one well-formed SVG document
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    link = root.find(".//{http://www.w3.org/2000/svg}a")
    assert link is not None and link.get("{http://www.w3.org/1999/xlink}title") == "tip"
