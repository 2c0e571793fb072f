"""The fleet report (filter kprobes.fleet.fleet_report): content, safety and scale.

Expected numbers are computed here from the fixture facts, independently of the filter.
"""
import html
import html.parser
import json
import os
import re
import time
from collections import Counter

import pytest
import yaml

from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible_collections.kprobes.fleet.plugins.filter.fleet_report import fleet_report, FilterModule, _dur
from ansible_collections.kprobes.fleet.plugins.plugin_utils.settings import REPORT_MARK

from report_fixtures import HOSTILE, HOSTILE_HOST, HOSTILE_PROBE, facts, hostile_fleet, lab_fleet, latency, probe, \
    synthetic_fleet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
        self.handlers = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] += 1
        for cls in (attrs.get("class") or "").split():
            self.classes[(tag, cls)] += 1
        if "id" in attrs:
            self.ids[attrs["id"]] += 1
        self.handlers.extend(k for k in attrs if k.startswith("on"))
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
    assert trixie.count(">n/a<") == 9  # 2 probes x (3 deltas + seconds), disk_full's errnos (not known)
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


# -- #23: exact errnos, fleet-merged latency, filtered, whose -------------------------------------------

def cells(fragment):
    """The cells' text (unescaped) of each body row of the first table in ``fragment``."""
    body = fragment.split("<tbody>")[1].split("</tbody>")[0]
    return [[html.unescape(re.sub(r"<[^>]*>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def rows_of(doc, cls):
    """The rows of the table of class ``cls``."""
    return cells(doc.split('<table class="%s">' % cls)[1])


def section(doc, anchor):
    return doc.split('<h2 id="%s">' % anchor)[1].split("<h2")[0]


def bars(doc):
    """{upper bound label: calls} of the latency pictures' bars, from their titles."""
    titles = re.findall(r"<rect [^>]*><title>([^<]*)</title>", section(doc, "latency"))
    return dict((t.split(": ")[0], int(t.split(": ")[1].split()[0].replace(",", ""))) for t in map(html.unescape, titles))


@pytest.mark.parametrize("ns,text", [(0, "0ns"), (511, "511ns"), (1023, "1\u00b5s"), (4095, "4.1\u00b5s"),
                                     (65535, "66\u00b5s"), (1048575, "1ms"), (134217727, "134ms"),
                                     (2147483647, "2.1s"), (None, "n/a"), ("x", "n/a")])
def test_durations_as_people_write_them(ns, text):
    assert _dur(ns) == text


def test_errno_table_sums_the_fleet():
    doc = fleet_report(lab_fleet())
    rows = rows_of(doc, "errnos")
    # probe, errno, count (fleet), delta (hosts that have one; an errno a known delta does not name: 0), hosts, top
    assert rows == [["disk_full", "ENOSPC", "4", "4", "1", "bookworm-1 4"],
                    ["open_failures", "ENOENT", "47", "1", "2", "bookworm-1 30, trixie-1 17"],
                    ["open_failures", "EACCES", "11", "0", "1", "bookworm-1 11"]]
    assert "for disk_full on 1 host." in section(doc, "errnos")  # trixie-1's are null


def test_errno_table_sums_a_thousand_hosts():
    fleet = synthetic_fleet(1000)
    total, delta, hosts = Counter(), Counter(), Counter()
    for f in fleet.values():
        for name, p in (f or {}).get("probes", {}).items():
            for errno, n in p["errnos"].items():
                total[(name, errno)] += n
                hosts[(name, errno)] += 1 if n else 0
            for errno in set(p["errnos"]) | set((p.get("delta") or {}).get("errnos") or ()):
                if p.get("delta"):
                    delta[(name, errno)] += p["delta"]["errnos"].get(errno, 0)
    rows = rows_of(fleet_report(fleet), "errnos")
    got = dict(((r[0], r[1]), (int(r[2].replace(",", "")), int(r[3].replace(",", "")), int(r[4]))) for r in rows)
    assert got == dict((k, (total[k], delta[k], hosts[k])) for k in total)
    # the matches, split into errnos by the fixture, are what the table sums to
    assert sum(total.values()) == sum(p["matches"] for f in fleet.values() if f for n, p in f["probes"].items()
                                      if n != "slow_fsyncs")


def latency_fleet():
    """Hosts with different log2 bucket sets, one without latency, one with garbage."""
    return {
        "a": facts("6.1.0", "module", {"slow_fsyncs": probe("vfs_fsync_range", 15, 0, latency=latency(
            [[1023, 10], [2047, 5]], 10 * 600 + 5 * 1500))}, []),
        "b": facts("6.12.0", "module", {"slow_fsyncs": probe("vfs_fsync_range", 12, 2, latency=latency(
            [[2047, 3], [4095, 7], [268435455, 2]], 3 * 1500 + 7 * 3000 + 2 * 200000000))}, []),
        "c": facts("6.1.0", "module", {"slow_fsyncs": probe("vfs_fsync_range", 1, 0)}, []),   # latency null
        "d": facts("6.1.0", "module", {"slow_fsyncs": {"function": "vfs_fsync_range", "hits": 1}}, []),  # absent
        "e": facts("6.1.0", "module", {"slow_fsyncs": probe("vfs_fsync_range", 0, 0, latency=latency([], 0))}, []),
        "f": facts("6.1.0", "module", {"slow_fsyncs": probe("vfs_fsync_range", 0, 0, latency={
            "count": "x", "sum_ns": None, "buckets": [["x", 1], [1023], None, [1023, None], [True, 4]],
            "p50_ns": "y"})}, []),
        "g": facts("6.1.0", "module", {"slow_fsyncs": probe("vfs_fsync_range", 0, 0, latency={"buckets": "x"})}, []),
    }


def test_latency_buckets_are_summed_across_hosts():
    doc = fleet_report(latency_fleet())
    page = parse(doc)
    # exact sums per bucket: 1023: 10 (a), 2047: 5 + 3, 4095: 7 (b), 2^28 - 1: 2 (b)
    assert bars(doc) == {"\u2264 1\u00b5s": 10, "\u2264 2\u00b5s": 8, "\u2264 4.1\u00b5s": 7, "\u2264 268ms": 2}
    calls = 27
    mean = (10 * 600 + 5 * 1500 + 3 * 1500 + 7 * 3000 + 2 * 200000000) // calls
    # p50: the 14th call is in the 2047 bucket; p99: the 27th in the 2^28 - 1 one (bucket upper bounds)
    assert rows_of(doc, "latency") == [["slow_fsyncs", "5", "27", _dur(mean), "\u2264 2\u00b5s", "\u2264 268ms",
                                        "\u2264 268ms", "b \u2264 268ms, a \u2264 2\u00b5s"]]
    assert page.tags["svg"] == 1  # one picture per latency probe (no events: no timeline)
    pic = section(doc, "latency")
    assert "p50 \u2264 2\u00b5s" in pic and "p99 \u2264 268ms" in pic and "bucket upper bounds" in pic
    # one slot per log2 bucket from 2^10 - 1 to 2^28 - 1, the empty ones without a bar
    assert pic.count("<rect ") == 4 and 'aria-label="latency of slow_fsyncs: 27 calls across the fleet"' in pic


def test_latency_of_a_thousand_hosts():
    fleet = synthetic_fleet(1000)
    merged = Counter()
    for f in fleet.values():
        for le, n in ((f or {}).get("probes", {}).get("slow_fsyncs", {}).get("latency") or {}).get("buckets", []):
            merged[le] += n
    got = bars(fleet_report(fleet))
    assert len(got) == len(merged) and sum(got.values()) == sum(merged.values())
    assert got == dict(("\u2264 " + _dur(le), n) for le, n in merged.items())


def test_without_latency_or_errnos_the_sections_say_so():
    fleet = {"h": facts("6.1.0", "tracefs", {"p": probe("f", 1, 1)}, [])}
    doc = fleet_report(fleet)
    assert "No probe times its calls" in section(doc, "latency")
    assert "No probe has counted an errno." in section(doc, "errnos")
    assert "for p on 1 host." in section(doc, "errnos")


def test_every_new_cell_is_escaped():
    bad_host, bad_probe = HOSTILE_HOST, HOSTILE_PROBE
    fleet = hostile_fleet()
    doc = fleet_report(fleet)
    page = parse(doc)
    for tag in ("script", "img", "iframe", "object", "marquee", "u"):
        assert page.tags[tag] == 0, tag
    assert page.handlers == []
    assert page.tags["svg"] == 2 and page.tags["b"] == len(page.cards)
    esc = html.escape
    for text in (bad_host, bad_probe, '<img src=x onerror=alert(2)>', HOSTILE, '"><svg onload=alert(3)>',
                 '<u onmouseover=alert(4)>', "/'\"&<b>", '/system.slice/"><object>.service'):
        assert esc(text) in doc, text
    # the cells say what the facts say, once unescaped
    assert rows_of(doc, "errnos") == [[bad_probe, '<img src=x onerror=alert(2)>', "3", "1", "1", bad_host + " 3"]]
    assert rows_of(doc, "latency")[0][0] == bad_probe and rows_of(doc, "latency")[0][-1] == bad_host + " \u2264 1\u00b5s"
    top = rows_of(doc, "top")
    assert top[0][1:4] == ["x", "ENOENT", "2"] and top[0][-1] == "/'\"&<b> 1, /system.slice/\"><object>.service 1"
    assert top[1][1] == "\\xff\\xfe" + HOSTILE and top[1][-1] == HOSTILE + " 1"
    events = cells(doc.split("<th>ts</th>")[1])
    assert [r[5:8] for r in events] == [['1 / "><svg onload=alert(3)>', '<u onmouseover=alert(4)>', HOSTILE],
                                        ["2", "", '/system.slice/"><object>.service'], ["3", "", "/'\"&<b>"]]
    assert 'aria-label="latency of %s: 5 calls across the fleet"' % esc(bad_probe) in doc


def test_whose_columns_in_the_event_table():
    fleet = lab_fleet()
    evs = fleet["bookworm-1"]["events"]
    evs.append({"probe": "slow_fsyncs", "function": "vfs_fsync_range", "ret": 0, "errno": None, "pid": 900,
                "tid": 901, "uid": 1000, "comm": "postgres", "lat_ns": 201000000, "unit": "postgresql.service",
                "seq": 4415, "ts_usec": 93000000, "ts": 93.0})
    doc = fleet_report(fleet)
    table = doc.split('id="h-bookworm-1"')[1].split("<thead><tr><th>ts</th>")[1]
    head = ["ts"] + re.findall(r"<th>([^<]*)</th>", table.split("</thead>")[0])
    assert head == ["ts", "probe", "comm", "errno", "ret", "pid / tid", "uid", "unit / cgroup", "latency", "args"]
    rows = cells(table)
    assert rows[-1] == ["93.0", "slow_fsyncs", "postgres", "", "0", "900 / 901", "1000", "postgresql.service",
                        "201ms", ""]
    assert rows[-2] == ["92.0", "disk_full", "dd", "ENOSPC", "-28", "820", "", "demo-fill.service", "", ""]
    assert rows[0] == ["91.2", "open_failures", "cat", "ENOENT", "-2", "812", "", "", "", ""]  # none: blank
    # a cgroup without a unit is shown as it is
    evs[0]["cgroup"] = "/user.slice/user-1000.slice/session-4.scope"
    assert "<td class=\"path\">/user.slice/user-1000.slice/session-4.scope</td>" in fleet_report(fleet)


def test_filtered_and_exempted_totals():
    fleet = lab_fleet()
    del fleet["trixie-1"]["probes"]["open_failures"]["exempted"]   # a host collected before it existed
    for p in fleet["bookworm-1"]["probes"].values():
        p["exempted"] = 2
    del fleet["trixie-1"]["probes"]["disk_full"]["filtered"]
    fleet["trixie-1"]["probes"]["disk_full"]["exempted"] = None
    rows = dict((r[0], r) for r in cells(fleet_report(fleet).split("Probes across the fleet")[1]))
    # probe, hosts, hits, matches, nmissed, filtered, exempted, ...
    assert rows["slow_fsyncs"][5:7] == ["7", "2"]
    assert rows["open_failures"][5:7] == ["0", "2"]
    assert rows["disk_full"][5:7] == ["0", "2"]
    for f in fleet.values():
        for p in (f or {}).get("probes", {}).values():
            p.pop("filtered", None)
            p.pop("exempted", None)
    rows = dict((r[0], r) for r in cells(fleet_report(fleet).split("Probes across the fleet")[1]))
    assert rows["slow_fsyncs"][5:7] == ["n/a", "n/a"]


def test_null_and_odd_errnos_and_latency_render():
    odd = {
        "p1": {"hits": 1, "errnos": "garbage", "latency": "x", "delta": {"errnos": ["x"]}},
        "p2": {"hits": 1, "errnos": {"ENOENT": None, "EIO": "x", "EPERM": "2"}, "delta": {"errnos": None},
               "latency": {"count": 3}},
        "p3": {"hits": 1, "errnos": {}, "delta": {"errnos": {"ENOENT": 1}}},
        "p4": {"hits": 1},
    }
    doc = fleet_report({"h": {"probes": odd, "loaded": True, "events": [{"probe": "p1", "uid": None, "tid": None}]}})
    parse(doc)
    assert rows_of(doc, "errnos") == [["p2", "EPERM", "2", "n/a", "1", "h 2"], ["p3", "ENOENT", "0", "1", "0", ""]]
    assert "for p1 on 1 host, p4 on 1 host." in doc
    assert rows_of(doc, "latency") == [["p2", "1", "3", "0ns", "n/a", "n/a", "n/a", ""]]
    assert "p2: no call timed yet." in doc


# -- set_stats (playbooks/collect.yml) and the demo table (playbooks/demo.yml), rendered by Ansible -----------

def trusted(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return dict((k, trusted(v)) for k, v in value.items())
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value


def set_stats_of(host_facts):
    book = yaml.safe_load(open(os.path.join(REPO, "playbooks", "collect.yml")))
    task = [t for t in book[0]["tasks"] if "ansible.builtin.set_stats" in t][0]
    variables = trusted(task["vars"])
    variables.update(ansible_facts={"kprobes_fleet": host_facts}, inventory_hostname="h1")
    data = Templar(loader=DataLoader(), variables=variables).template(trusted(task["ansible.builtin.set_stats"]["data"]))
    return data["kprobes_fleet_summary"]["h1"]


def test_set_stats_summary_carries_errnos_latency_and_filtered_without_buckets():
    host = lab_fleet()["bookworm-1"]
    host["probes"]["old"] = {"function": "f", "hits": 1}   # a probe without latency or errnos
    summary = set_stats_of(host)
    assert summary["events"] == 5 and summary["backend"] == "module"
    probes = summary["probes"]
    assert sorted(probes) == sorted(host["probes"])
    lat = host["probes"]["slow_fsyncs"]["latency"]
    assert probes["slow_fsyncs"]["latency"] == {"count": 120, "sum_ns": lat["sum_ns"], "p50_ns": 2047,
                                                "p99_ns": 268435455}
    assert probes["slow_fsyncs"]["filtered"] == 7
    assert probes["open_failures"]["errnos"] == {"ENOENT": 30, "EACCES": 11}
    assert probes["open_failures"]["delta"]["errnos"] == {"ENOENT": 1}
    assert probes["open_failures"]["latency"] is None and probes["old"]["latency"] is None
    for name, p in host["probes"].items():   # everything else as in the facts
        assert dict((k, v) for k, v in probes[name].items() if k != "latency") == \
            dict((k, v) for k, v in p.items() if k != "latency")
    assert set_stats_of(dict(host, probes={}))["probes"] == {}


def test_set_stats_summary_stays_small():
    """A module host with 64 buckets in each of 8 timed probes: the summary does not grow with them."""
    host = lab_fleet()["bookworm-1"]
    host["probes"] = dict(("p%d" % i, probe("f", 1, 1, errnos={"ENOENT": 1}, latency=latency(
        [[(1 << b) - 1, 1000 + b] for b in range(1, 65)], 10 ** 12))) for i in range(8))
    size = len(json.dumps(set_stats_of(host)))
    assert size < 4000 and size * 4 < len(json.dumps(host["probes"])), size


def demo_table(fleet):
    book = yaml.safe_load(open(os.path.join(REPO, "playbooks", "demo.yml")))
    task = [p for p in book if p.get("name") == "Summary"][0]["tasks"][0]
    live = dict((h, f) for h, f in fleet.items() if f)
    variables = trusted(task["vars"])
    variables.update(ansible_play_hosts=sorted(live),
                     hostvars=dict((h, {"ansible_facts": {"kprobes_fleet": f}}) for h, f in live.items()))
    text = Templar(loader=DataLoader(), variables=variables).template(trusted(task["ansible.builtin.debug"]["msg"]))
    return text.split("\n\nWhy")[0].splitlines()


def test_demo_table_shows_errnos_and_p99():
    fleet = lab_fleet()
    fleet["trixie-1"]["probes"]["open_failures"]["errnos"] = {"ENOENT": 9, "EACCES": 5, "ENOTDIR": 3}
    fleet["trixie-1"]["probes"]["open_failures"]["latency"] = latency([[511, 3], [2147483647, 1]], 10)
    lines = demo_table(fleet)
    head = lines[0].split()
    assert head[-5:] == ["events", "errnos", "p99", "last", "event"]
    rows = dict((tuple(line.split()[:4:3]), line) for line in lines[1:])
    assert re.search(r" 4 +ENOSPC:4 +- +dd ENOSPC pid 820$", rows[("bookworm-1", "disk_full")])
    assert re.search(r" 1 +ENOENT:30 EACCES:11 +- +cat ENOENT pid 812$", rows[("bookworm-1", "open_failures")])
    assert re.search(r" 0 +none +\u2264268ms +-$", rows[("bookworm-1", "slow_fsyncs")])
    assert re.search(r" 1 +- +- +sh ENOSPC pid 615$", rows[("trixie-1", "disk_full")])  # errnos null
    assert re.search(r" ENOENT:9 EACCES:5 ENOTDIR:3 +\u22642.1s +cat", rows[("trixie-1", "open_failures")])
    # the columns line up: each row as wide as the header up to the last event
    assert len(set(line.index(" last event") if i == 0 else None for i, line in enumerate(lines))) == 2
