"""The fleet report in a real headless browser (the system's chromium, DevTools protocol over a pipe).

The page is written by playbooks/report.yml from a fact cache (as AWX keeps facts), opened in
chromium, and checked for console errors, blocked loads and what a reader sees. Skipped when no
chromium is installed (apt-get install chromium); CI installs it (.ci/run).
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from headless import Browser, find_chromium  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.kprobes.fleet.plugins.filter.fleet_report import fleet_report  # noqa: E402
from report_fixtures import HOSTILE, hostile_fleet, lab_fleet, synthetic_fleet  # noqa: E402
from test_report_playbook import write_report  # noqa: E402

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(find_chromium() is None,
                                 reason="no chromium on PATH: the browser test needs Debian's chromium "
                                        "(apt-get install chromium; .ci/run installs it)")]


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def url(path):
    return "file://" + str(path)


def test_the_detector_sees_errors(tmp_path, browser):
    """A page with a script error, a console error and a blocked load: all three are reported."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><title>bad</title></head><body><p>x</p>"
                   "<script>console.error('boom'); nosuchfunction();</script></body></html>")
    page = browser.open(url(bad))
    errors = "\n".join(page.errors)
    assert "console.error: boom" in errors and "nosuchfunction" in errors, errors
    csp = tmp_path / "csp.html"
    csp.write_text("<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" "
                   "content=\"default-src 'none'\"><title>csp</title></head><body>"
                   "<img src=\"http://127.0.0.1:1/x.png\"></body></html>")
    assert any("Content Security Policy" in e for e in browser.open(url(csp)).errors)


def test_lab_report_in_the_browser(repo, tmp_path, browser):
    fleet = lab_fleet()
    rc, out, path = write_report(repo, tmp_path, fleet)
    assert rc == 0, out
    page = browser.open(url(path))
    assert page.errors == []
    assert page.requests == [url(path)]  # nothing else was fetched
    assert page.eval("document.title") == "kprobes.fleet report"
    cards = page.eval("Object.fromEntries([...document.querySelectorAll('[data-card]')]"
                      ".map(c => [c.dataset.card, c.querySelector('b').textContent]))")
    live = [f for f in fleet.values() if f]
    assert cards["hosts"] == str(len(fleet))
    assert cards["matches"] == str(sum(p["matches"] for f in live for p in f["probes"].values()))
    assert cards["events"] == str(sum(len(f["events"]) for f in live))
    # the summaries are visible without opening anything, the detail is folded
    visible = page.eval("document.body.innerText")
    for host in ("trixie-1", "bullseye-1"):
        assert host in visible  # they need attention
    assert page.eval("document.querySelector('#hosts').open") is False
    assert page.eval("document.querySelector('#h-bookworm-1').checkVisibility()") is False
    # open the host list and one host: its counters and deltas are there and shown
    page.eval("document.querySelector('#hosts').open = true; document.querySelector('#h-bookworm-1').open = true")
    cells = page.eval("[...document.querySelectorAll('#h-bookworm-1 table')[0].rows].map(r => "
                      "[...r.cells].map(c => c.innerText))")
    assert cells[0][:4] == ["probe", "function", "hits", "matches"]
    rows = dict((r[0], r) for r in cells[1:])
    probe = fleet["bookworm-1"]["probes"]["open_failures"]
    assert rows["open_failures"][2] == "{:,}".format(probe["hits"])
    assert rows["open_failures"][cells[0].index("\u0394 matches")] == str(probe["delta"]["matches"])
    assert rows["open_failures"][cells[0].index("errnos (\u0394)")] == "ENOENT 30 (\u0394 1) \u00b7 EACCES 11 (\u0394 0)"
    assert rows["slow_fsyncs"][cells[0].index("latency")] == "120 calls, p50 \u2264 2\u00b5s, p99 \u2264 268ms"
    assert page.eval("document.querySelector('#h-bookworm-1 table').checkVisibility()") is True
    # the timeline is drawn: one dot per event, inside the picture
    assert page.eval("document.querySelectorAll('svg circle').length") == sum(len(f["events"]) for f in live)
    assert page.eval("document.querySelector('svg').getBoundingClientRect().width") > 500
    # the exact errnos are a visible table; the latency picture has a bar per non-empty bucket, seen at its size
    assert "bookworm-1 30, trixie-1 17" in visible
    pic = "document.querySelector('#latency ~ svg')"
    assert page.eval(pic + ".querySelectorAll('rect').length") == len(
        fleet["bookworm-1"]["probes"]["slow_fsyncs"]["latency"]["buckets"])
    assert page.eval(pic + ".getBoundingClientRect().width") > 500 and page.eval(pic + ".checkVisibility()") is True
    assert "p99 \u2264 268ms" in page.eval(pic + ".textContent")
    page.screenshot(str(tmp_path / "report.png"))
    assert os.path.getsize(str(tmp_path / "report.png")) > 10000


def test_hostile_strings_stay_text_in_the_browser(tmp_path, browser):
    path = tmp_path / "hostile.html"
    path.write_text(fleet_report(hostile_fleet()))
    page = browser.open(url(path))
    assert page.errors == [] and page.requests == [url(path)]
    assert page.eval("document.querySelectorAll('script, iframe, object, img, marquee, u').length") == 0
    page.eval("document.querySelector('#hosts').open = true; "
              "document.querySelectorAll('details.host details').forEach(d => d.open = true)")
    assert HOSTILE in page.eval("document.body.innerText")
    assert page.eval("document.querySelectorAll('svg').length") == 2  # the timeline and one latency picture


def test_thousand_hosts_in_the_browser(tmp_path, browser):
    # Rendered by the filter itself: the playbook path is tested above with the lab fleet (a run
    # over 1,000 inventory hosts costs minutes of controller time).
    path = tmp_path / "fleet.html"
    path.write_text(fleet_report(synthetic_fleet(1000)))
    page = browser.open(url(path))
    assert page.errors == []
    assert page.load_seconds < 15, page.load_seconds
    assert page.eval("document.querySelectorAll('details.host').length") == 1000
    # readable: the summaries fit in a few screens, the detail is folded
    height = page.eval("document.documentElement.scrollHeight")
    assert height < 6000, height
    assert page.eval("document.querySelector('#hosts').open") is False
