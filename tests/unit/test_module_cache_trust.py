"""The controller's module cache is every host's root of trust: nothing others could write is used.

A host loads the .ko whose sha256 the cache holds, so the cache root and every entry read from it
must be owned by the user running Ansible and writable by nobody else; build keys are path
components and must be exactly 16 lower-case hex digits.
"""
import hashlib
import os

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import names
from ansible_collections.kprobes.fleet.plugins.plugin_utils.module_cache import (
    ModuleCache, UntrustedCache, file_sha256)

K1 = "0123456789abcdef"
MOD = "kprobes_fleet"
CONTENT = b"\x7fELF fake module"
OTHER_UID = 12345

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another uid")


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    os.chmod(str(d), 0o700)
    return d


def published(root, key=K1, content=CONTENT):
    cache = ModuleCache(str(root), MOD)
    staged = root / (key + ".staged.ko")
    staged.write_bytes(content)
    os.chmod(str(staged), 0o600)
    meta = cache.publish(key, str(staged), {"release": "6.1.0-50-amd64"})
    assert meta and meta["sha256"] == hashlib.sha256(content).hexdigest()
    return cache


# -- the cache root -------------------------------------------------------------------------
@pytest.mark.parametrize("mode,who", [(0o777, "its group and others"), (0o775, "its group"),
                                      (0o757, "others"), (0o1777, "its group and others")])
def test_a_root_others_can_write_is_refused_by_ensure_root_and_claim(root, mode, who):
    os.chmod(str(root), mode)
    cache = ModuleCache(str(root), MOD)
    with pytest.raises(UntrustedCache) as e:
        cache.ensure_root()
    assert "writable by %s" % who in str(e.value)
    assert "must be yours alone" in str(e.value)
    with pytest.raises(UntrustedCache, match="writable by"):
        cache.claim(K1, "h1", 1800)
    assert os.listdir(str(root)) == []  # no lock, no .claim


def test_a_root_others_can_write_is_refused_even_for_a_missing_key(root):
    os.chmod(str(root), 0o777)
    with pytest.raises(UntrustedCache, match="writable by"):
        ModuleCache(str(root), MOD).lookup(K1)


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_root_others_can_write_is_refused_by_lookup(root, mode):
    cache = published(root)
    assert cache.lookup(K1)["release"] == "6.1.0-50-amd64"
    os.chmod(str(root), mode)
    with pytest.raises(UntrustedCache, match="writable by"):
        cache.lookup(K1)
    with pytest.raises(UntrustedCache, match="writable by"):
        cache.sha256_of(K1)


def test_a_root_others_can_write_is_refused_by_publish(root):
    cache = ModuleCache(str(root), MOD)
    staged = root / "x.ko"
    staged.write_bytes(CONTENT)
    os.chmod(str(root), 0o777)
    with pytest.raises(UntrustedCache, match="writable by"):
        cache.publish(K1, str(staged), {})
    assert staged.read_bytes() == CONTENT
    assert not os.path.exists(cache.entry(K1))


def test_ensure_root_creates_a_missing_root_0700(tmp_path):
    cache = ModuleCache(str(tmp_path / "a" / "cache"), MOD)
    cache.ensure_root()
    assert os.stat(cache.root).st_mode & 0o777 == 0o700


@needs_root
def test_a_root_owned_by_another_user_is_refused(root):
    cache = published(root)
    os.chown(str(root), OTHER_UID, OTHER_UID)
    for call in (cache.ensure_root, lambda: cache.claim("fedcba9876543210", "h", 1800),
                 lambda: cache.lookup(K1)):
        with pytest.raises(UntrustedCache) as e:
            call()
        assert "owned by uid %d" % OTHER_UID in str(e.value)
    assert not os.path.exists(cache.lock("fedcba9876543210"))


# -- entries ---------------------------------------------------------------------------------
@pytest.mark.parametrize("which,mode,who", [
    ("entry", 0o770, "its group"), ("entry", 0o702, "others"),
    ("ko", 0o660, "its group"), ("sha", 0o606, "others"), ("meta", 0o620, "its group")])
def test_an_entry_made_writable_after_publish_is_refused(root, which, mode, who):
    cache = published(root)
    path = {"entry": cache.entry(K1), "ko": cache.ko(K1), "sha": cache.ko(K1) + ".sha256",
            "meta": os.path.join(cache.entry(K1), "meta.json")}[which]
    os.chmod(path, mode)
    with pytest.raises(UntrustedCache) as e:
        cache.lookup(K1)
    assert "writable by %s" % who in str(e.value) and path in str(e.value)
    with pytest.raises(UntrustedCache):
        cache.sha256_of(K1)


def test_a_key_with_an_untrusted_entry_is_not_claimed_over_it(root):
    cache = published(root)
    os.chmod(cache.entry(K1), 0o777)
    with pytest.raises(UntrustedCache):
        cache.claim(K1, "h", 1800)
    assert not os.path.exists(cache.lock(K1))


def test_a_symlinked_ko_inside_an_entry_is_refused(root, tmp_path):
    cache = published(root)
    outside = tmp_path / "evil.ko"
    outside.write_bytes(b"evil")
    os.chmod(str(outside), 0o600)
    os.unlink(cache.ko(K1))
    os.symlink(str(outside), cache.ko(K1))
    with pytest.raises(UntrustedCache, match="symbolic link"):
        cache.lookup(K1)
    with pytest.raises(UntrustedCache, match="symbolic link"):
        cache.sha256_of(K1)


def test_a_symlinked_sha256_file_is_refused(root, tmp_path):
    cache = published(root)
    outside = tmp_path / "evil.sha256"
    outside.write_text("%s  %s.ko\n" % (hashlib.sha256(b"evil").hexdigest(), MOD))
    os.chmod(str(outside), 0o600)
    os.unlink(cache.ko(K1) + ".sha256")
    os.symlink(str(outside), cache.ko(K1) + ".sha256")
    with pytest.raises(UntrustedCache, match="symbolic link"):
        cache.sha256_of(K1)


def test_a_symlinked_entry_is_refused(root, tmp_path):
    cache = published(root)
    elsewhere = tmp_path / "elsewhere"
    os.rename(cache.entry(K1), str(elsewhere))
    os.symlink(str(elsewhere), cache.entry(K1))
    with pytest.raises(UntrustedCache, match="symbolic link"):
        cache.lookup(K1)


@needs_root
def test_an_entry_owned_by_another_user_is_refused(root):
    cache = published(root)
    os.chown(cache.ko(K1), OTHER_UID, OTHER_UID)
    with pytest.raises(UntrustedCache, match="owned by uid %d" % OTHER_UID):
        cache.lookup(K1)


def test_an_incomplete_entry_is_not_cached(root):
    cache = published(root)
    os.unlink(cache.ko(K1) + ".sha256")
    assert cache.lookup(K1) is None
    with pytest.raises(UntrustedCache, match="not in the module cache"):
        cache.sha256_of(K1)


# -- publish ---------------------------------------------------------------------------------
def test_publish_refuses_a_staged_file_outside_the_cache_root(root, tmp_path):
    cache = ModuleCache(str(root), MOD)
    evil = tmp_path / "evil.ko"
    evil.write_bytes(b"evil")
    os.chmod(str(evil), 0o600)
    with pytest.raises(UntrustedCache, match="is not a staged file of the cache"):
        cache.publish(K1, str(evil), {})
    assert evil.read_bytes() == b"evil"
    assert not os.path.exists(cache.entry(K1))
    assert os.listdir(str(root)) == []


@pytest.mark.parametrize("where", ["sub/x.ko", "../cache/../evil.ko"])
def test_publish_refuses_a_staged_file_in_a_subdirectory_or_via_dotdot(root, tmp_path, where):
    cache = ModuleCache(str(root), MOD)
    path = os.path.normpath(os.path.join(str(root), where))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"evil")
    os.chmod(path, 0o600)
    with pytest.raises(UntrustedCache, match="is not a staged file"):
        cache.publish(K1, os.path.join(str(root), where), {})
    assert open(path, "rb").read() == b"evil"
    assert not os.path.exists(cache.entry(K1))


def test_publish_refuses_a_staged_symlink_and_leaves_its_target(root, tmp_path):
    cache = ModuleCache(str(root), MOD)
    target = tmp_path / "target.ko"
    target.write_bytes(b"evil")
    os.chmod(str(target), 0o600)
    staged = root / "x.ko"
    staged.symlink_to(target)
    with pytest.raises(UntrustedCache, match="symbolic link"):
        cache.publish(K1, str(staged), {})
    assert target.read_bytes() == b"evil"
    assert not os.path.exists(cache.entry(K1))


def test_publish_refuses_a_staged_file_others_can_write(root):
    cache = ModuleCache(str(root), MOD)
    staged = root / "x.ko"
    staged.write_bytes(CONTENT)
    os.chmod(str(staged), 0o666)
    with pytest.raises(UntrustedCache, match="writable by its group and others"):
        cache.publish(K1, str(staged), {})
    assert staged.exists()
    assert not os.path.exists(cache.entry(K1))


# -- sha256_of -------------------------------------------------------------------------------
def test_sha256_of_returns_the_digest(root):
    cache = published(root)
    assert cache.sha256_of(K1) == hashlib.sha256(CONTENT).hexdigest()
    assert cache.sha256_of(K1) == file_sha256(cache.ko(K1))


@pytest.mark.parametrize("text", ["", "\n", "nothex  kprobes_fleet.ko\n", "%s  kprobes_fleet.ko\n" % ("0" * 63),
                                  "%s  kprobes_fleet.ko\n" % ("g" * 64), "%s0  x\n" % ("a" * 64),
                                  "../../etc/passwd\n"])
def test_sha256_of_refuses_a_malformed_sha256_file(root, text):
    cache = published(root)
    with open(cache.ko(K1) + ".sha256", "w") as f:
        f.write(text)
    with pytest.raises(names.InvalidValue) as e:
        cache.sha256_of(K1)
    assert "must be 64 hex digits" in str(e.value)


def test_sha256_of_accepts_upper_case_and_returns_lower_case(root):
    cache = published(root)
    digest = hashlib.sha256(CONTENT).hexdigest()
    with open(cache.ko(K1) + ".sha256", "w") as f:
        f.write("%s  %s.ko\n" % (digest.upper(), MOD))
    assert cache.sha256_of(K1) == digest


# -- build keys ------------------------------------------------------------------------------
BAD_KEYS = ["../x", "k1", "ABCDEF0123456789", "0123456789abcdef\n", "", "0123456789abcde",
            "0123456789abcdef0", "../../../etc/xx", "/etc/passwd", None, 123]


@pytest.mark.parametrize("key", BAD_KEYS, ids=[repr(k) for k in BAD_KEYS])
def test_a_key_that_is_not_16_lower_case_hex_digits_is_refused(root, tmp_path, key):
    cache = ModuleCache(str(root), MOD)
    # What a path built from '../x' would reach, to show that nothing is removed or created.
    victim = tmp_path / "x.lock"
    victim.write_text("not ours")
    for call in (lambda: cache.lock(key), lambda: cache.entry(key), lambda: cache.release(key),
                 lambda: cache.ko(key), lambda: cache.staged(key, "h"),
                 lambda: cache.claim(key, "h", 1800), lambda: cache.lookup(key)):
        with pytest.raises(names.InvalidValue) as e:
            call()
        assert str(e.value).startswith("build_key: must be 16 lower-case hex digits"), str(e.value)
    assert victim.read_text() == "not ours"
    assert [n for n in os.listdir(str(root)) if n.endswith(".lock")] == []


def test_release_of_a_dotdot_key_does_not_delete_outside_the_cache(root, tmp_path):
    cache = ModuleCache(str(root), MOD)
    victim = tmp_path / "x.lock"
    victim.write_text("not ours")
    assert os.path.normpath(os.path.join(cache.root, "../x.lock")) == str(victim)
    with pytest.raises(names.InvalidValue):
        cache.release("../x")
    assert victim.exists()


def test_a_valid_key_is_accepted(root):
    cache = ModuleCache(str(root), MOD)
    assert cache.lock(K1) == os.path.join(str(root), K1 + ".lock")
    assert cache.entry(K1) == os.path.join(str(root), K1)
    cache.release(K1)  # nothing to release: no error


@pytest.mark.parametrize("module", ["../x", "mm", "Kprobes", "kprobes_fleet\n", ""])
def test_a_bad_module_name_is_refused(root, module):
    with pytest.raises(names.InvalidValue):
        ModuleCache(str(root), module)
