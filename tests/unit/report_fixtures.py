"""Fixture facts for the fleet report: a small lab-like fleet and a synthetic one of any size.

The shape is what kprobes.fleet.probe_facts returns (its RETURN docs), plus the per-probe
``delta`` ({hits, matches, nmissed, errnos, seconds}) where a host has one; ``errnos`` and ``latency``
where the probe counts or times them.
"""
import random

ERRNOS = {"open_failures": [("ENOENT", -2), ("EACCES", -13), ("ENOTDIR", -20)],
          "disk_full": [("ENOSPC", -28), ("EDQUOT", -122)]}
COMMS = ["cat", "dd", "python3", "systemd-journal", "nginx", "postgres", "sshd", "cron job"]


def probe(function, hits, matches, nmissed=0, delta=None, **extra):
    p = {"function": function, "hits": hits, "matches": matches, "nmissed": nmissed, "kp_nmissed": 0,
         "maxactive": 64, "registered": 1, "reg_err": 0, "suppressed": 0, "filtered": 0, "exempted": 0,
         "errnos": None, "latency": None}
    if delta is not None:
        p["delta"] = delta
    p.update(extra)
    return p


def event(probe_name, comm, errno, ret, pid, seq, ts, **extra):
    ev = {"probe": probe_name, "function": "vfs_write" if probe_name == "disk_full" else "do_filp_open",
          "ret": ret, "errno": errno, "pid": pid, "comm": comm, "seq": seq,
          "ts_usec": int(ts * 1e6), "ts": ts}
    ev.update(extra)
    return ev


def latency(buckets, sum_ns):
    """``latency`` facts from ``[[le_ns, count], ...]``: count, sum and the percentiles as the module
    computes them (the upper bound of the bucket the quantile falls in)."""
    count = sum(n for dummy, n in buckets)

    def upper(q):
        seen = 0
        for le, n in buckets:
            seen += n
            if seen >= q * count:
                return le
        return None
    return {"count": count, "sum_ns": sum_ns, "buckets": buckets, "p50_ns": upper(0.5), "p99_ns": upper(0.99)}


def facts(kernel, backend, probes, events, events_lost=0, events_dropped=0, loaded=True):
    return {"module": "kprobes_fleet", "loaded": loaded, "backend": backend,
            "backend_reason": "lockdown=integrity refuses unsigned modules" if backend == "tracefs" else None,
            "spec_hash": "3f2a9c0d11e4b7a5", "kernel": kernel, "boot_id": "84622e10-2383-4f54-ba8b-50898d63d5b3",
            "probes": probes, "events": events, "events_lost": events_lost, "events_dropped": events_dropped,
            "cursor": {"boot_id": "84622e10-2383-4f54-ba8b-50898d63d5b3", "next_seq": 100}}


def lab_fleet():
    """Three hosts as after 'make demo', one with missed calls and lost events, one without facts."""
    return {
        "bookworm-1": facts("6.1.0-50-amd64", "module", {
            "open_failures": probe("do_filp_open", 9120, 41, delta={"hits": 812, "matches": 1, "nmissed": 0,
                                                                    "errnos": {"ENOENT": 1}, "seconds": 3600.2},
                                   errnos={"ENOENT": 30, "EACCES": 11}),
            "disk_full": probe("vfs_write", 30211, 4, delta={"hits": 977, "matches": 4, "nmissed": 0,
                                                             "errnos": {"ENOSPC": 4}, "seconds": 3600.2},
                               errnos={"ENOSPC": 4}),
            # five 0.2 s sleeps among fast calls: 2^27 <= 0.2e9 < 2^28
            "slow_fsyncs": probe("vfs_fsync_range", 120, 5, filtered=7, errnos={},
                                 delta={"hits": 120, "matches": 5, "nmissed": 0, "errnos": {}, "seconds": 3600.2},
                                 latency=latency([[2047, 60], [4095, 40], [8191, 15], [268435455, 5]],
                                                 60 * 1500 + 40 * 3000 + 15 * 6000 + 5 * 200000000)),
        }, [event("open_failures", "cat", "ENOENT", -2, 812, 4410, 91.2),
            event("disk_full", "sh", "ENOSPC", -28, 815, 4411, 91.5),
            event("disk_full", "sh", "ENOSPC", -28, 816, 4412, 91.6),
            event("disk_full", "sh", "ENOSPC", -28, 817, 4413, 91.7),
            event("disk_full", "dd", "ENOSPC", -28, 820, 4414, 92.0, unit="demo-fill.service",
                  cgroup="/system.slice/demo-fill.service")]),
        "trixie-1": facts("6.12.57+deb13-amd64", "tracefs", {
            "open_failures": probe("do_filp_open", 5000, 17, nmissed=3, errnos={"ENOENT": 17}),
            "disk_full": probe("vfs_write", 12000, 4),
        }, [event("open_failures", "cat", "ENOENT", -2, 612, 1, 80.0),
            event("disk_full", "sh", "ENOSPC", -28, 615, 2, 80.4)], events_lost=2),
        "bullseye-1": None,
    }


def synthetic_fleet(n, seed=11, events_per_host=5):
    """``n`` hosts with two probes; every 17th host has missed calls, every 89th lost events,
    every 101st no facts; every other host has a delta. The matches are split into exact errno counts
    (delta too); module hosts (two in three) also time a third probe, slow_fsyncs, whose buckets differ
    from host to host; every 50th host has units in its events."""
    rnd = random.Random(seed)
    more = random.Random(seed + 1)  # the errnos, latency and units: the rest stays what it was
    fleet = {}
    for i in range(n):
        name = "host-%04d.example.test" % i
        if i % 101 == 100:
            fleet[name] = None
            continue
        probes = {}
        for pname, fn in (("open_failures", "do_filp_open"), ("disk_full", "vfs_write")):
            hits = rnd.randint(1000, 10 ** 7)
            matches = rnd.randint(0, 500)
            delta = ({"hits": rnd.randint(0, 1000), "matches": rnd.randint(0, matches), "nmissed": 0,
                      "seconds": 3600.0} if i % 2 == 0 else None)
            probes[pname] = probe(fn, hits, matches, nmissed=(7 if i % 17 == 16 and pname == "disk_full" else 0),
                                  delta=delta, errnos=split(more, matches, ERRNOS[pname]))
            if delta:
                delta["errnos"] = split(more, delta["matches"], ERRNOS[pname])
        if i % 3:
            buckets = [[(1 << b) - 1, more.randint(1, 10 ** 5)] for b in sorted(more.sample(range(9, 31), 6))]
            probes["slow_fsyncs"] = probe("vfs_fsync_range", sum(n for dummy, n in buckets), 0, errnos={},
                                          latency=latency(buckets, sum(n * (le // 2 + 1) for le, n in buckets)))
        events = []
        for k in range(events_per_host):
            pname = rnd.choice(sorted(ERRNOS))
            errno, ret = rnd.choice(ERRNOS[pname])
            events.append(event(pname, rnd.choice(COMMS), errno, ret, rnd.randint(100, 60000), k + 1,
                                round(1000 + k * 10 + rnd.random() * 5, 6)))
            if i % 50 == 0:
                events[-1]["unit"] = more.choice(["nginx.service", "postgresql@15-main.service", "cron.service"])
        fleet[name] = facts(["5.10.0-35-amd64", "6.1.0-50-amd64", "6.12.57+deb13-amd64"][i % 3],
                            "module" if i % 3 else "tracefs", probes, events,
                            events_lost=(3 if i % 89 == 88 else 0))
    return fleet


def split(rnd, total, errnos):
    """``total`` as exact counts per errno name (the names of ``errnos``, some of them)."""
    out = {}
    names = [name for name, dummy in errnos]
    for name in names[:-1]:
        n = rnd.randint(0, total)
        if n:
            out[name] = n
        total -= n
    if total:
        out[names[-1]] = total
    return out


HOSTILE = '<script>alert("x")</script>'
HOSTILE_HOST = '<iframe src="//evil">'
HOSTILE_PROBE = '</svg><object data=x onload=alert(1)>'


def hostile_fleet():
    """One host whose names, errno names, units, cgroups, ids and comm are markup (as a tampered host could send)."""
    bad_host, bad_probe = HOSTILE_HOST, HOSTILE_PROBE
    return {bad_host: facts("6.1.0", "module", {
        bad_probe: probe("f'\"<marquee>", 5, 3, filtered=1, errnos={'<img src=x onerror=alert(2)>': 3},
                         delta={"hits": 1, "matches": 1, "nmissed": 0, "errnos": {'<img src=x onerror=alert(2)>': 1},
                                "seconds": 1.0},
                         latency=latency([[1023, 5]], 3000)),
    }, [{"probe": bad_probe, "function": "f", "ret": -2, "errno": "ENOENT", "pid": 1, "tid": '"><svg onload=alert(3)>',
         "uid": '<u onmouseover=alert(4)>', "comm": "\\xff\\xfe" + HOSTILE, "unit": HOSTILE,
         "cgroup": "/system.slice/x.service", "lat_ns": 1500, "seq": 1, "ts_usec": 1, "ts": 1.0},
        {"probe": bad_probe, "function": "f", "ret": -2, "errno": "ENOENT", "pid": 2, "comm": "x",
         "cgroup": '/system.slice/"><object>.service', "seq": 2, "ts_usec": 2, "ts": 2.0},
        {"probe": bad_probe, "function": "f", "ret": -2, "errno": "ENOENT", "pid": 3, "comm": "x",
         "cgroup": "/'\"&<b>", "unit": "", "seq": 3, "ts_usec": 3, "ts": 3.0}])}
