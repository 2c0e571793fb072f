"""The controller-side module cache: one builder per build key, atomic publication."""
import json
import multiprocessing
import os

from ansible_collections.kprobes.fleet.plugins.action import build_plan


def _claim(root, host, queue):
    queue.put((host, build_plan.ModuleCache(root, "kprobes_fleet").claim("k1", host, 1800)))


def _race(root, n):
    """n processes claim k1 at once; returns {host: won}."""
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_claim, args=(root, "h%d" % i, queue)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return dict(queue.get() for _proc in procs)


def test_exactly_one_of_many_concurrent_hosts_becomes_the_builder(tmp_path):
    results = _race(str(tmp_path), 16)
    assert sum(results.values()) == 1
    winner = [h for h, won in results.items() if won][0]
    assert build_plan.ModuleCache(str(tmp_path), "kprobes_fleet").holder("k1")["host"] == winner


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.claim("k1", "a", 1800)
    info = cache.holder("k1")
    info["pid"] = 2 ** 22 + 12345  # no such process
    with open(cache.lock("k1"), "w") as f:
        json.dump(info, f)
    assert cache.claim("k1", "b", 1800)
    assert cache.holder("k1")["host"] == "b"


def test_a_live_lock_is_respected(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.claim("k1", "a", 1800)
    assert not cache.claim("k1", "b", 1800)


def test_publish_moves_the_ko_in_with_its_sha256_and_releases(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.lookup("k1") is None
    assert cache.claim("k1", "a", 1800)
    staged = tmp_path / "k1.staged-a.ko"
    staged.write_bytes(b"\x7fELF fake module")
    meta = cache.publish("k1", str(staged), {"release": "6.1.0-50-amd64"})
    cache.release("k1")
    assert meta["sha256"] == build_plan.file_sha256(cache.ko("k1"))
    assert open(cache.ko("k1") + ".sha256").read().split()[0] == meta["sha256"]
    assert not staged.exists()
    assert cache.holder("k1") is None
    assert cache.lookup("k1")["release"] == "6.1.0-50-amd64"


def test_second_publication_of_a_key_keeps_the_first(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    for content in (b"first", b"second"):
        staged = tmp_path / "staged.ko"
        staged.write_bytes(content)
        cache.publish("k1", str(staged), {})
    with open(cache.ko("k1"), "rb") as f:
        assert f.read() == b"first"
    assert [n for n in os.listdir(str(tmp_path)) if ".tmp-" in n] == []


def test_template_sha_covers_both_templates():
    assert len(build_plan.template_sha()) == 64


def test_a_cached_key_is_never_claimed(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.claim("k1", "a", 1800)
    staged = tmp_path / "k1.staged-a.ko"
    staged.write_bytes(b"\x7fELF fake module")
    cache.publish("k1", str(staged), {})
    cache.release("k1")
    assert not cache.claim("k1", "b", 1800)
    assert cache.holder("k1") is None


def test_exactly_one_run_takes_over_a_stale_lock(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.claim("k1", "dead", 1800)
    info = dict(cache.holder("k1"), pid=2 ** 22 + 12345)  # no such process
    with open(cache.lock("k1"), "w") as f:
        json.dump(info, f)
    results = _race(str(tmp_path), 12)
    assert sum(results.values()) == 1
    assert cache.holder("k1")["host"] == [h for h, won in results.items() if won][0]
