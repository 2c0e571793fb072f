"""Stand-in for get-pip.py used by ansible-test: pip from the standard library's ensurepip.

ansible-test calls it as `python get_pip.py [--no-setuptools] [--no-wheel] [pip==X] ...`
inside a fresh virtualenv. It bootstraps pip with ensurepip, then installs the requested
pip version from the configured package index.
"""
import os
import ssl
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel", "--disable-pip-version-check")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
env = dict(os.environ)
cafile = ssl.get_default_verify_paths().openssl_cafile
if cafile and os.path.exists(cafile):
    env.setdefault("PIP_CERT", cafile)
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args, env=env)
