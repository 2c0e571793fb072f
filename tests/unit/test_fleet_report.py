"""The fleet report (filter kprobes.fleet.fleet_report): content, safety and scale.

Expected numbers are computed here from the fixture facts, independently of the filter.
"""
import html.parser
import re
import time
from collections import Counter

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.kprobes.fleet.plugins.filter.fleet_report import fleet_report, FilterModule
from ansible_collections.kprobes.fleet.plugins.plugin_utils.settings import REPORT_MARK

from report_fixtures import lab_fleet, synthetic_fleet

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source", "area", "base"}
SVG_LEAF = {"rect", "circle", "line", "path"}


class Page(html.parser.HTMLParser):
    """Checks that tags nest and close, and keeps what the assertions need."""

    def __init__(self):
        html.parser.HTMLParser.__init__(self, convert_charrefs=True)
        self.stack = []
        self.errors = []
        self.tags = Counter()
        self.classes = Counter()
        self.ids = Counter()
        self.text = []
        self.cards = {}
        self._card = None
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] += 1
        for cls in (attrs.get("class") or "").split():
            self.classes[(tag, cls)] += 1
        if "id" in attrs:
            self.ids[attrs["id"]] += 1
        for key in ("src", "href", "xlink:href", "action"):
            if key in attrs:
                self.urls.append(attrs[key])
        if "data-card" in attrs:
            self._card = attrs["data-card"]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags[tag] += 1

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append("unbalanced </%s>, open: %s" % (tag, self.stack[-3:]))
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self._card and self.stack and self.stack[-1] == "b":
            self.cards[self._card] = data
            self._card = None


def parse(doc):
    page = Page()
    page.feed(doc)
    page.close()
    assert not page.errors, page.errors[:5]
    assert page.stack == [], page.stack
    return page


def test_filter_is_registered():
    assert FilterModule().filters()["fleet_report"] is fleet_report


def test_lab_fleet_content():
    fleet = lab_fleet()
    doc = fleet_report(fleet, generated="2026-11-29 06:00:00 UTC")
    page = parse(doc)
    text = " ".join(page.text)
    assert REPORT_MARK in doc
    for host in fleet:
        assert page.ids["h-%s" % host] == 1, host
    # cards: computed from the fixture
    live = [f for f in fleet.values() if f]
    assert page.cards["hosts"] == str(len(fleet))
    assert page.cards["with facts"] == str(len(live))
    assert page.cards["matches"] == "{:,}".format(sum(p["matches"] for f in live for p in f["probes"].values()))
    assert page.cards["\u0394 matches"] == str(sum(p["delta"]["matches"] for f in live for p in f["probes"].values()
                                                   if "delta" in p))
    assert page.cards["events"] == str(sum(len(f["events"]) for f in live))
    assert page.cards["events lost"] == "2"
    # trixie-1 (nmissed 3, events_lost 2) and bullseye-1 (no facts) need attention, bookworm-1 does not
    assert page.cards["need attention"] == "2"
    attention = doc.split('id="attention"')[1].split("<h2")[0]
    assert "trixie-1" in attention and "bullseye-1" in attention and "bookworm-1" not in attention
    assert "open_failures nmissed=3" in attention and "events_lost=2" in attention
    assert page.classes[("details", "warn")] == 2
    # the host without a delta shows n/a, the one with a delta its numbers
    trixie = doc.split('id="h-trixie-1"')[1].split("</details>")[0]
    assert trixie.count(">n/a<") == 8  # 2 probes x (3 deltas + seconds)
    bookworm = doc.split('id="h-bookworm-1"')[1].split("</details>")[0]
    assert ">812<" in bookworm and ">3600.2<" in bookworm and "n/a" not in bookworm.split("events_lost")[0]
    # the top pair fleet-wide: (sh, ENOSPC) 4 times on 2 hosts
    top = doc.split('class="top"')[1].split("</table>")[0]
    first = re.search(r"<tr><td class=\"n\">1</td><td>([^<]*)</td><td>([^<]*)</td><td class=\"n\">(\d+)</td>"
                      r"<td class=\"n\">(\d+)</td>", top)
    assert first.groups() == ("sh", "ENOSPC", "4", "2")
    # the timeline has one dot per event and the unaligned-axis note
    assert page.tags["circle"] == 7
    assert "seconds since each host booted" in text
    assert "generated 2026-11-29 06:00:00 UTC" in text


def test_self_contained_and_escaped():
    fleet = lab_fleet()
    fleet["bookworm-1"]["events"][0]["comm"] = '<script>alert("x")</script>'
    fleet['<img src=x onerror=alert(1)>'] = None
    doc = fleet_report(fleet)
    page = parse(doc)
    assert page.tags["script"] == 0 and page.tags["img"] == 0 and page.tags["link"] == 0
    assert page.urls == ["#h-%s" % h for h in ['<img src=x onerror=alert(1)>', "bullseye-1", "trixie-1"]]
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in doc
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", doc)
    assert "@import" not in doc and "url(" not in doc


def test_aligned_timeline_when_hosts_report_uptime():
    fleet = lab_fleet()
    for f in fleet.values():
        if f:
            f["uptime"] = 100.0
    doc = fleet_report(fleet)
    assert "seconds before collection" in doc and "not aligned" not in doc


def test_empty_and_odd_facts_render():
    doc = fleet_report({"a": None, "b": {}, "c": {"probes": {"p": {"hits": None, "delta": {"matches": "x"}}},
                                                  "events": [{"probe": "p"}, "garbage"], "loaded": True}})
    page = parse(doc)
    assert page.cards["hosts"] == "3" and page.cards["with facts"] == "2"
    assert "No event carries a timestamp." in doc


@pytest.mark.parametrize("bad", [None, [], "hosts"])
def test_input_must_be_a_mapping(bad):
    with pytest.raises(AnsibleFilterError, match="expects a mapping"):
        fleet_report(bad)


def test_thousand_hosts_stay_readable():
    fleet = synthetic_fleet(1000)
    start = time.monotonic()
    doc = fleet_report(fleet)
    elapsed = time.monotonic() - start
    page = parse(doc)
    assert elapsed < 10, elapsed
    assert len(doc) < 8 * 1024 * 1024, len(doc)
    live = dict((h, f) for h, f in fleet.items() if f)
    bad = sorted(h for h, f in fleet.items() if f is None or f["events_lost"] or
                 any(p["nmissed"] for p in f["probes"].values()))
    assert page.cards["hosts"] == "1000" and page.cards["with facts"] == str(len(live))
    assert page.cards["need attention"] == str(len(bad))
    # summaries first: the attention list shows 50 rows, the rest is folded
    attention = doc.split('id="attention"')[1].split("<h2")[0]
    assert attention.count('<tr class="warn">') == len(bad)
    assert len(bad) > 50 and attention.split("<details>")[0].count('<tr class="warn">') == 50
    assert doc.index('id="attention"') < doc.index('id="hosts"')
    # every host once in the folded detail; the timeline is bounded
    assert sum(1 for i in page.ids if i.startswith("h-")) == 1000
    assert page.tags["circle"] <= 20 * 300
    # the top pair is the one counted here
    pairs = Counter((e["comm"], e["errno"]) for f in live.values() for e in f["events"])
    (comm, errno), count = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    top = doc.split('class="top"')[1].split("</table>")[0]
    assert ("<td>%s</td><td>%s</td><td class=\"n\">%d</td>" % (comm, errno, count)) in top
    # deltas: summed over the hosts that have one
    dm = sum(p["delta"]["matches"] for f in live.values() for p in f["probes"].values() if "delta" in p)
    assert page.cards["\u0394 matches"] == "{:,}".format(dm)


def test_timeline_rows_are_bounded_and_say_so():
    fleet = lab_fleet()
    base = fleet["bookworm-1"]["events"][0]
    fleet["bookworm-1"]["events"] = [dict(base, seq=i, ts=100.0 + i) for i in range(400)]
    doc = fleet_report(fleet)
    page = parse(doc)
    assert page.tags["circle"] == 300 + len(fleet["trixie-1"]["events"])
    assert "newest 300 events; the histogram counts all" in doc
    plain = fleet_report(lab_fleet())
    timeline = plain[plain.index("Timeline"):plain.index("<h2>Hosts</h2>")]
    assert "newest" not in timeline


# -- captured arguments (#22): the paths of failing calls, the filesystems that were full -----------------

def args_fleet():
    fleet = lab_fleet()
    evs = fleet["bookworm-1"]["events"]
    base = {"function": "do_sys_openat2", "ret": -2, "errno": "ENOENT", "pid": 10, "tid": 10, "uid": 1000,
            "seq": 1, "ts_usec": 5, "ts": 5.0}
    evs.append(dict(base, probe="open_paths", comm="python3", args={"path": "/etc/app.conf", "how": 0}))
    evs.append(dict(base, probe="open_paths", comm="python3", args={"path": "/etc/app.conf", "how": 0}))
    evs.append(dict(base, probe="open_paths", comm='<b>x</b>', args={"path": '</td><script>alert("p")</script>'}))
    evs.append(dict(base, probe="open_paths", comm="sh", args={"path": "/" + "a" * 254}, args_truncated=["path"]))
    full = dict(base, probe="disk_full", function="vfs_write", ret=-28, errno="ENOSPC", comm="dd")
    for i in range(3):
        evs.append(dict(full, args={"file": {"path": "/mnt/data/fill", "fs": "ext4", "dev": "7:0",
                                             "mount": "/mnt/data", "device": "/dev/loop0"}, "count": 65536}))
    evs.append(dict(full, args={"file": None}, args_errors={"file": "EFAULT"}))
    return fleet


def test_top_paths_and_full_filesystems():
    doc = fleet_report(args_fleet())
    page = parse(doc)
    text = "".join(page.text)
    assert page.tags["script"] == 0 and page.tags["b"] == len(page.cards)  # only the cards' own <b>
    assert "&lt;/td&gt;&lt;script&gt;alert(&quot;p&quot;)&lt;/script&gt;" in doc
    assert "&lt;b&gt;x&lt;/b&gt;" in doc
    assert "Top paths per (comm, errno)" in text and "Filesystems that were full" in text
    rows = re.findall(r'<table class="paths">.*?</table>', doc, re.S)[0]
    assert re.search(r'<td>python3</td><td>ENOENT</td><td class="path">/etc/app.conf</td><td class="n">2</td>', rows)
    assert "/" + "a" * 254 + " (cut)" in rows
    full = re.findall(r'<table class="full">.*?</table>', doc, re.S)[0]
    assert re.search(r'<td class="path">/mnt/data</td><td>ext4</td><td>/dev/loop0</td><td>ENOSPC</td>'
                     r'<td class="n">3</td><td class="path">/mnt/data/fill</td>', full)
    assert "file=/mnt/data/fill [ext4 /dev/loop0]" in doc  # the host's event table


def test_without_arguments_the_sections_say_how_to_get_them():
    doc = fleet_report(lab_fleet())
    assert "No event carries a path (give probes <code>args</code> to capture them)." in doc
    assert "No full filesystem in this collection" in doc
