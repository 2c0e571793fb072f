"""requires_ansible (meta/runtime.yml) claims exactly the ansible-core releases make test-core-matrix tests.

.ci/core-matrix.txt lists one release per minor version that runs on the controller's Python; the
claimed range must admit those minor versions and no other, the newest must be the one the
development virtualenv (requirements.txt) pins, and the roles' min_ansible_version the oldest.
"""
import glob
import os
import re

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def matrix():
    with open(os.path.join(REPO, '.ci', 'core-matrix.txt')) as f:
        return [Version(line.split('#')[0].strip()) for line in f if line.split('#')[0].strip()]


def claimed():
    with open(os.path.join(REPO, 'meta', 'runtime.yml')) as f:
        return SpecifierSet(yaml.safe_load(f)['requires_ansible'])


def test_one_release_per_minor_oldest_first():
    versions = matrix()
    minors = [v.release[:2] for v in versions]
    assert versions and minors == sorted(set(minors))


def test_the_claimed_range_is_the_tested_minors():
    versions, spec = matrix(), claimed()
    minors = set(v.release[:2] for v in versions)
    assert all(v in spec for v in versions)
    major = versions[0].major
    for minor in range(versions[0].minor - 2, versions[-1].minor + 3):
        for patch in (0, 99):
            release = Version('%d.%d.%d' % (major, minor, patch))
            assert (release in spec) == ((major, minor) in minors), release


def test_the_newest_is_the_development_pin():
    with open(os.path.join(REPO, 'requirements.txt')) as f:
        pin = re.search(r'^ansible-core==(\S+)$', f.read(), re.M).group(1)
    assert Version(pin) == matrix()[-1]


def test_roles_claim_the_oldest():
    oldest = '%d.%d' % matrix()[0].release[:2]
    for path in glob.glob(os.path.join(REPO, 'roles', '*', 'meta', 'main.yml')):
        with open(path) as f:
            assert str(yaml.safe_load(f)['galaxy_info']['min_ansible_version']) == oldest, path
