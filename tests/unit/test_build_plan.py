"""The controller-side module cache: one builder per build key, atomic publication."""
import json
import multiprocessing
import os
import shutil

from ansible_collections.kprobes.fleet.plugins.plugin_utils import module_cache as build_plan

K1 = "0123456789abcdef"


def _claim(root, host, queue):
    queue.put((host, build_plan.ModuleCache(root, "kprobes_fleet").claim(K1, host, 1800)))


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
    assert build_plan.ModuleCache(str(tmp_path), "kprobes_fleet").holder(K1)["host"] == winner


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.claim(K1, "a", 1800)
    info = cache.holder(K1)
    info["pid"] = 2 ** 22 + 12345  # no such process
    with open(cache.lock(K1), "w") as f:
        json.dump(info, f)
    assert cache.claim(K1, "b", 1800)
    assert cache.holder(K1)["host"] == "b"


def test_a_live_lock_is_respected(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.claim(K1, "a", 1800)
    assert not cache.claim(K1, "b", 1800)


def test_publish_moves_the_ko_in_with_its_sha256_and_releases(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.lookup(K1) is None
    assert cache.claim(K1, "a", 1800)
    staged = tmp_path / (K1 + ".staged-a.ko")
    staged.write_bytes(b"\x7fELF fake module")
    meta = cache.publish(K1, str(staged), {"release": "6.1.0-50-amd64"})
    cache.release(K1)
    assert meta["sha256"] == build_plan.file_sha256(cache.ko(K1))
    assert open(cache.ko(K1) + ".sha256").read().split()[0] == meta["sha256"]
    assert not staged.exists()
    assert cache.holder(K1) is None
    assert cache.lookup(K1)["release"] == "6.1.0-50-amd64"


def test_second_publication_of_a_key_keeps_the_first(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    for content in (b"first", b"second"):
        staged = tmp_path / "staged.ko"
        staged.write_bytes(content)
        cache.publish(K1, str(staged), {})
    with open(cache.ko(K1), "rb") as f:
        assert f.read() == b"first"
    assert [n for n in os.listdir(str(tmp_path)) if ".tmp-" in n] == []


def test_template_sha_covers_both_templates(tmp_path, monkeypatch):
    for name in build_plan.TEMPLATE_FILES:
        shutil.copy(os.path.join(build_plan.TEMPLATES, name), str(tmp_path / name))
    monkeypatch.setattr(build_plan, "TEMPLATES", str(tmp_path))
    seen = {build_plan.template_sha()}
    for name in build_plan.TEMPLATE_FILES:
        with open(str(tmp_path / name), "a") as f:
            f.write("\n/* changed */\n")
        seen.add(build_plan.template_sha())
    assert len(seen) == 1 + len(build_plan.TEMPLATE_FILES)


def test_a_cached_key_is_never_claimed(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.claim(K1, "a", 1800)
    staged = tmp_path / (K1 + ".staged-a.ko")
    staged.write_bytes(b"\x7fELF fake module")
    cache.publish(K1, str(staged), {})
    cache.release(K1)
    assert not cache.claim(K1, "b", 1800)
    assert cache.holder(K1) is None


def test_exactly_one_run_takes_over_a_stale_lock(tmp_path):
    cache = build_plan.ModuleCache(str(tmp_path), "kprobes_fleet")
    assert cache.claim(K1, "dead", 1800)
    info = dict(cache.holder(K1), pid=2 ** 22 + 12345)  # no such process
    with open(cache.lock(K1), "w") as f:
        json.dump(info, f)
    results = _race(str(tmp_path), 12)
    assert sum(results.values()) == 1
    assert cache.holder(K1)["host"] == [h for h, won in results.items() if won][0]
