"""#20 item 8: kprobes_fleet_cache_dir refuses careless values, and every validator message shows a
value as a user wrote it (quoted strings, null, YAML-ish lists), never as a Python repr."""
import os
import pwd
import re

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import names, probe_spec
from ansible_collections.kprobes.fleet.plugins.plugin_utils import settings

from test_entry_points import assert_refused
from test_signing import REPO, play


def cache_error(value):
    with pytest.raises(names.InvalidValue) as exc:
        settings._cache_dir("kprobes_fleet_cache_dir", value)
    message = str(exc.value)
    assert message.startswith("kprobes_fleet_cache_dir: "), message
    return message


# -- kprobes_fleet_cache_dir -----------------------------------------------------------------

ROOT_HOME = pwd.getpwuid(0).pw_dir


@pytest.mark.parametrize("value,words", [
    ("modules", "must be an absolute path on the controller (or start with ~), got 'modules'; a relative one "
                "would depend on the directory ansible-playbook runs from"),
    ("./cache", "got './cache'"),
    ("~nosuchuser-kpf/cache", "'~nosuchuser-kpf/cache' starts with ~nosuchuser-kpf, and the controller has no user "
                              "'nosuchuser-kpf'"),
    ("/tmp/kf\n", "\"/tmp/kf\\n\" holds a control character (a newline?)"),
    ("/tmp/k\x1bf", "holds a control character"),
    ("/tmp/" + "x" * 4100, "longer than 4096 characters"),
    ("/tmp/kf/../../etc", "'/tmp/kf/../../etc' has a \"..\" component"),
    ("/", "/ is the root directory, which is not ours to fill"),
    ("/var/lib", "/var/lib is a system directory, which is not ours to fill; use a directory of its own such as "
                 "~/.cache/kprobes-fleet/modules (clearing the cache is rm -rf of that directory)"),
    ("/usr/bin", "/usr/bin is a system directory"),
    ("//usr/bin/", "/usr/bin is a system directory"),
    ("/usr/local/lib/kprobes-fleet", "/usr/local/lib/kprobes-fleet is a system directory"),
    ("/etc/kprobes-fleet", "/etc/kprobes-fleet is a system directory"),
    ("/var/tmp", "/var/tmp is a system directory"),
    ("/home", "/home is a system directory"),
    ("/tmp", "/tmp is a system directory"),
    (ROOT_HOME, "%s is a " % ROOT_HOME),
    ("", "must be a directory path on the controller, got an empty string"),
    (None, "must be a directory path on the controller, got null"),
    (["/tmp/kf"], "must be a directory path on the controller, got list"),
])
def test_careless_cache_dirs_are_refused(value, words):
    assert words in cache_error(value)


def test_a_home_and_its_cache_root_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_error("~") == ("kprobes_fleet_cache_dir: %s is a home directory, shared with everything else "
                                "there; use a directory of its own such as ~/.cache/kprobes-fleet/modules (clearing "
                                "the cache is rm -rf of that directory)" % tmp_path)
    assert "%s/.cache is a home's cache directory" % tmp_path in cache_error("~/.cache")
    assert settings._cache_dir("kprobes_fleet_cache_dir", "~/.cache/kprobes-fleet/modules") == \
        str(tmp_path / ".cache" / "kprobes-fleet" / "modules")


def test_a_link_to_a_system_directory_is_refused(tmp_path):
    (tmp_path / "cache").symlink_to("/usr/bin")
    assert cache_error(str(tmp_path / "cache")) == (
        "kprobes_fleet_cache_dir: %s (which leads to /usr/bin) is a system directory, which is not ours to fill; "
        "use a directory of its own such as ~/.cache/kprobes-fleet/modules (clearing the cache is rm -rf of that "
        "directory)" % (tmp_path / "cache"))


def test_good_cache_dirs_are_returned_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings._cache_dir("kprobes_fleet_cache_dir", str(tmp_path) + "//a/./b/") == str(tmp_path / "a" / "b")
    assert settings._cache_dir("kprobes_fleet_cache_dir", "/var/cache/kprobes-fleet") == "/var/cache/kprobes-fleet"
    user = pwd.getpwuid(os.geteuid())
    assert settings._cache_dir("kprobes_fleet_cache_dir", "~%s/kf" % user.pw_name) == \
        os.path.join(user.pw_dir, "kf")
    result, errors, dummy = settings.check({}, "h1", ["h1"], check_probes=False)
    assert errors == [] and result["kprobes_fleet_cache_dir"] == str(tmp_path / ".cache/kprobes-fleet/modules")


@pytest.mark.parametrize("extra,words", [
    ({"kprobes_fleet_cache_dir": "cache"}, "kprobes_fleet_cache_dir: must be an absolute path"),
    ({"kprobes_fleet_cache_dir": "~nosuchuser-kpf/x"}, "the controller has no user 'nosuchuser-kpf'"),
    ({"kprobes_fleet_cache_dir": "/usr/bin"}, "kprobes_fleet_cache_dir: /usr/bin is a system directory"),
    ({"kprobes_fleet_cache_dir": "/var/lib"}, "kprobes_fleet_cache_dir: /var/lib is a system directory"),
    ({"kprobes_fleet_cache_dir": "/tmp/kf\nx"}, "holds a control character"),
    ({"kprobes_fleet_headers_extra_packages": [None]},
     "kprobes_fleet_headers_extra_packages: null (no value) is not a package name"),
    ({"kprobes_fleet_headers_release": ["6.1"]}, "got a list ['6.1']"),
])
def test_entry_points_refuse_careless_values_with_a_sentence(tmp_path, extra, words):
    rc, out = play(REPO, tmp_path, "deploy-probes.yml", extra)
    assert_refused(rc, out, words, "[ghost1, ghost2]")
    assert "_Ansible" not in out and "None" not in out, out


# -- values as a user wrote them ----------------------------------------------------------------

@pytest.mark.parametrize("value,text", [
    (None, "null"), (True, "true"), (False, "false"), (3, "3"), (1.5, "1.5"),
    ("6.1", "'6.1'"), ("it's", "'it''s'"), ("a\nb", '"a\\nb"'), ("a\\b", '"a\\\\b"'), ("\x1b", '"\\x1b"'),
    (["6.1"], "['6.1']"), ([None, True, 2], "[null, true, 2]"), ({"errno": ["ENOSPC"]}, "{'errno': ['ENOSPC']}"),
    ("x" * 300, "'" + "x" * 196 + "..."),
])
def test_shown_is_yaml_not_python(value, text):
    assert names.shown(value) == text


PYTHON_ONLY = re.compile(r"\bNone\b|\bTrue\b|\bFalse\b|_Ansible|<class|\bu'|\\\\n'|\[u'")
BAD = [None, True, False, 0, -1, 1.5, "", " ", "x\ny", "it's", ["6.1"], [None], [1, "a"], {"a": None}, {}, [],
       ["a", ["b"]], "~nosuchuser-kpf/x", "rel", "/usr/bin", "/var/lib"]


def messages():
    """Every message the validator gives for a battery of careless values in every variable and field."""
    seen = set()
    for name in settings.PUBLIC:
        if name == "kprobes_fleet_events":  # its own battery: test_events.py
            continue
        for value in BAD:
            values = {name: [value] if name == "kprobes_fleet_probes" else value}
            seen.update(settings.check(values, "h1", ["h1"])[1])
    for field in ["name", "function", "returns", "report", "maxactive", "log", "log_burst", "log_interval",
                  "errnos", "unknown"]:
        for value in BAD:
            seen.update(settings.check({"kprobes_fleet_probes": [{"name": "p", "function": "vfs_write",
                                                                  field: value}]}, "h1", ["h1"])[1])
            seen.update(settings.check({"kprobes_fleet_probes": [{"name": "p", "function": [value]}]},
                                       "h1", ["h1"])[1])
    return sorted(seen)


def test_no_message_holds_a_python_repr():
    found = messages()
    assert len(found) > 80
    assert [m for m in found if PYTHON_ONLY.search(m)] == []


@pytest.mark.parametrize("values,message", [
    ({"kprobes_fleet_headers_extra_packages": [None]},
     "kprobes_fleet_headers_extra_packages: null (no value) is not a package name (letters, digits and .+_:~- only, "
     "starting with a letter or digit)"),
    ({"kprobes_fleet_headers_extra_packages": ["ok", True]},
     "kprobes_fleet_headers_extra_packages: the boolean true is not a package name (letters, digits and .+_:~- "
     "only, starting with a letter or digit)"),
    ({"kprobes_fleet_headers_release": ["6.1"]},
     "kprobes_fleet_headers_release: must be empty (the running kernel) or a kernel release such as 6.1.0-50-amd64, "
     "got a list ['6.1']"),
    ({"kprobes_fleet_headers_release": 6.1},
     "kprobes_fleet_headers_release: must be empty (the running kernel) or a kernel release such as 6.1.0-50-amd64, "
     "got the number 6.1"),
    ({"kprobes_fleet_state": "gone\n"}, "kprobes_fleet_state: must be one of present, absent, got \"gone\\n\""),
    ({"kprobes_fleet_module_name": "mm"},
     "kprobes_fleet_module_name: 'mm' is a directory the kernel itself has in /sys/kernel; our module creates "
     "/sys/kernel/<name>, choose another name"),
])
def test_messages_of_the_issue(values, message):
    assert settings.check(values, "h1", ["h1"], check_probes=False)[1] == [message]


def test_probe_spec_messages_show_yaml():
    with pytest.raises(names.InvalidValue) as exc:
        probe_spec.normalize([{"name": "p", "function": [{"function": "vfs_write", "bogus": None}]}])
    assert "candidate 'vfs_write': unknown key 'bogus'" in str(exc.value)
    with pytest.raises(names.InvalidValue) as exc:
        probe_spec.normalize([{"name": "p", "function": [{"returns": "int", "function": None}]}])
    assert "None" not in str(exc.value), str(exc.value)
