"""Signed modules: the variables, the cert's identity, the build key, the plan, the role variables.

The loader's trust check (probe_module) is tested with the fake host in test_probe_module.py,
signing itself (on the controller, compared with the kernel's sign-file) in test_module_sign.py.
"""
import datetime
import hashlib
import os
import shutil

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultLib, VaultSecret
from ansible.template import Templar
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ansible_collections.kprobes.fleet.plugins.action import validate as validate_action
from ansible_collections.kprobes.fleet.plugins.filter.backend_choice import backend_choice

from ansible_collections.kprobes.fleet.plugins.module_utils import names, probe_spec
from ansible_collections.kprobes.fleet.plugins.module_utils.probe_spec import build_key
from ansible_collections.kprobes.fleet.plugins.plugin_utils import settings
from ansible_collections.kprobes.fleet.plugins.plugin_utils.module_cache import template_sha

from test_build_plan_action import KERNEL, run_action
from test_entry_points import assert_refused, play
from test_headers_vars import trusted

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# openssl req -new -nodes -utf8 -sha256 -days 36500 -batch -x509 -subj '/CN=kprobes.fleet lab test/'
LAB_CERT = b"""-----BEGIN CERTIFICATE-----
MIIDJTCCAg2gAwIBAgIUBWRDylnOKvqQyMykB+WSi6ecCQIwDQYJKoZIhvcNAQEL
BQAwITEfMB0GA1UEAwwWa3Byb2Jlcy5mbGVldCBsYWIgdGVzdDAgFw0yNjExMjkw
MzQ1NDFaGA8yMTI2MTEwNTAzNDU0MVowITEfMB0GA1UEAwwWa3Byb2Jlcy5mbGVl
dCBsYWIgdGVzdDCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBAJOZsCPK
KYGt1KrdXnYDiroBXBWiht5JUvy3DcmMO5/5GyHfikPJWNu6Uw8wBuMBS87PaXpg
FTpSqwIULAMlzI1FZQBGBdCPJhTASlm96l2frXwcEfWA5LgIXlMKuXhsPqg/44PG
d5yI9lrmOY4mYfNW6JVDn9UmrKMpnQJYP/48/WeroFD2LAAKeMRYduTXqCDvXMI6
SEXYZzvlH2uDhbakaWzVenDYYwkhILuC0QaDeuIwYrXgx2E9lJgiJJ62XbQOnkgx
aFqiamGsDvZ2liYrsQqsN3jSoLxKnyR2Vc4lBCOQVXBUhpJgYuJkJpSLsSSDD4Gs
5BS6mphLAw2Kv6UCAwEAAaNTMFEwHQYDVR0OBBYEFOKCVB1O1p9HLyEVJUc+gsg1
svbAMB8GA1UdIwQYMBaAFOKCVB1O1p9HLyEVJUc+gsg1svbAMA8GA1UdEwEB/wQF
MAMBAf8wDQYJKoZIhvcNAQELBQADggEBAGF2ysxWv6THm2qhOCF/blWbtuyuBn54
v56gjfOUGMR/OATDrHQQ738kjnu4BX7mH3MDpEicVlUJNRh5AMV4q8YvwE7Zd1bg
mNmLlWJu6pzNBte6bju2MqqkSiQdSSV2wqWKdt0U1D9TJorWAwGG9E0zEPCW/bVR
1XUw83vI4xk7W1Rj1mNdhWuUPfyYt9RUUhuV5//9MW9GmGTN8WXvhuMbN29Ppj9G
GbeatJep2P43iDa2oUm7k2QMLBvejzOsVSncfipqKjB7eBwHS7ja/tPfdf53v6P9
vNVL5Qapwcmqe26nd8mkL07ALe2j+dGTcZ3Mag4iqqSO7IP73XSf9ow=
-----END CERTIFICATE-----
"""
LAB_SKID = "e282541d4ed69f472f211525473e82c835b2f6c0"  # what /proc/keys shows after its name
LAB_SERIAL = "056443ca59ce2afa90c8cca407e5928ba79c0902"  # what modinfo -F sig_key shows (with colons)

# -subj '/O=Acme Corp/CN=Signer Ü' -addext 'subjectKeyIdentifier=none': the kernel shows the serial
NO_SKID_CERT = b"""-----BEGIN CERTIFICATE-----
MIIDEjCCAfqgAwIBAgIUDPnHyZ9K7BETrh+KKo0Qktg65RgwDQYJKoZIhvcNAQEL
BQAwKDESMBAGA1UECgwJQWNtZSBDb3JwMRIwEAYDVQQDDAlTaWduZXIgw5wwHhcN
MjYxMTI5MDM1MDAzWhcNMzYxMTI2MDM1MDAzWjAoMRIwEAYDVQQKDAlBY21lIENv
cnAxEjAQBgNVBAMMCVNpZ25lciDDnDCCASIwDQYJKoZIhvcNAQEBBQADggEPADCC
AQoCggEBAK/mo+PaF5AQxNTax4YRzBNzcr1Gu4YZxM7oUIHrfBrQ171daY9dtjOt
o0r2HIg+aCifc3FsGPOc8md/iXd8m2VNDeCSuGmlay7ABfBiW7m2vSxQ16L8n0cb
7MNNNz7cWSWLjS6uKCR7i3d07PLY1Lq0rToDbdaChmjjgW0dR0/r6Z5co+8g68md
0m3a9Zv/PTFSCLGndo9BqpKro1IbpJRTLW+2uFQFuwXhd46wLewlySDUIEpFNCSr
EN4OVWjtAF4AWbaaWHjJ6VmHdSYytbRloczXszXTHfddLIWSF1myReo2IX6bJTZ3
q+VSgBOrz5SMQTkjJT4W2nMpokqp+/UCAwEAAaM0MDIwHwYDVR0jBBgwFoAUm6Ai
SV+k4Bnhz/Q/irNjci8lfWYwDwYDVR0TAQH/BAUwAwEB/zANBgkqhkiG9w0BAQsF
AAOCAQEAXe5fAFbRUYrSJquh+VGldGAQT7pLYnb0zJMZjwD1PCAnCmkwLi8xhqt/
8P66rcE+a/lUTsS5/NG42F4h9JdJcfSf0aB9uLKLw71BfqjEiZkIc0hrUllKOFhL
45aIbLHoes1+6q4hIMufiG9XK3KZ8yPYcAVL4V5azkxaa7VzeiCRDSi/wWVaLLgV
u5R/FZBUjnr2Ie4ALk7MZ3xBoav6E4ukVIEJ8lj+taiTFAVl+vj55Xa1DRc+1fzk
alDg/UC/S689X6+3ZTYDb3Q4uiNcJ5Ct90aQfUOKnw1uhpOQkVkgavR1qRe89YPr
fNNl7sY6mARgdZIYTVSkCz5c4PGdEQ==
-----END CERTIFICATE-----
"""

# issued by 'Example Module CA' (serial 0x8a11, DER 00 8a 11): modinfo's signer is the issuer
CA_ISSUED_CERT = b"""-----BEGIN CERTIFICATE-----
MIIDAjCCAeqgAwIBAgIDAIoRMA0GCSqGSIb3DQEBCwUAMBwxGjAYBgNVBAMMEUV4
YW1wbGUgTW9kdWxlIENBMCAXDTI2MTEyOTAzNTI1OFoYDzIxMjYxMTA1MDM1MjU4
WjAlMSMwIQYDVQQDDBpFeGFtcGxlIE1vZHVsZSBTaWduZXIgMjAyNjCCASIwDQYJ
KoZIhvcNAQEBBQADggEPADCCAQoCggEBAMq7k3fiaSPJS6+ohwB/bJbwWzmEHS79
F/5IZZoPqnalKSpSciXA0UWSKmrA/mAAL9TjeO+hNNrgx5ZstxaG25TWDYnjNFWU
em35+yP3Fae1HXhbLZaPleDfYEFjDOaVMMTgCKtj8lUlA5XPs54nwKx+FfAPQctk
U0NDICDlReEo3JkSZqsOe4QjTSrR71rjd7C+B9XN2wjS1+neQoMrsjH0FFplglkH
psrChXvAus16pU4i9KcDCQEz6sJGDn0jaNU/YEKl5Z0on06r8/mu699ZeJsozp1x
H+EXnPsjTrkxetO6s28msDWVG8nybACCAB8ypVDYUJ2p79D4B7NTqWMCAwEAAaNC
MEAwHQYDVR0OBBYEFBl2rqnzFbSTm6/VdtJsPsY3p1btMB8GA1UdIwQYMBaAFPKQ
AO6FWFYIX4Aybjw+1WWMETYIMA0GCSqGSIb3DQEBCwUAA4IBAQBo22cEpen35HUs
6eUoCwF1hMvUpOkYdq9pmDEt2glyC7Zds9Sos/YqpqBYDxAempmnOehfVMctItwD
34DziEsLPjJFxED7wJAzXD80JJtv2cGt66m6dXx1Do9kcYJbPg/tZYGwX/dXslrU
ghf7Lnaq+SU7mw5qVnvSkgz1XcPvLUAyU0e8NjqEz2bTEkHepA1zAw0dvZVQIqPF
qdUEZZCB4gxXLsKpMHhxEPh4Qa+f7bL7rNtFerHb7WvbIJhTuPuovTjJBlMLMT29
umkQgrUoOMGR4ENSgEdZAa2+htp3PUpKSRt21rZZJF0Ec55zFa7/rDWP7V3kAt87
jpBtCsKp
-----END CERTIFICATE-----
"""

FAKE_KEY = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
VAULT_PASSWORD = b"kprobes-fleet-test"


def pem_to_der(pem):
    import base64
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body)


def vault(data):
    return VaultLib([("default", VaultSecret(VAULT_PASSWORD))]).encrypt(data)


def write(path, data, mode):
    path.write_bytes(data)
    os.chmod(str(path), mode)
    return str(path)


# -- the build key -------------------------------------------------------------------------

def test_unsigned_build_key_is_what_it_was_before_signing():
    # Pinned: the key of an unsigned module must not change (every host would rebuild and reload).
    args = ("x86_64", "6.1.0-50-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.135-1", "0123456789abcdef")
    assert build_key(*args) == "84a17115e56ae7d0"
    assert build_key(*args, signer=None) == "84a17115e56ae7d0"
    assert build_key(*args, signer="") == "84a17115e56ae7d0"


def test_signer_is_part_of_the_build_key():
    args = ("x86_64", "6.1.0-50-amd64", "#1", "0123456789abcdef")
    one, two = build_key(*args, signer="a" * 64), build_key(*args, signer="b" * 64)
    assert len({build_key(*args), one, two}) == 3
    assert one == build_key(*args, signer="a" * 64)


# -- the cert's identity -------------------------------------------------------------------

def test_identity_of_a_self_signed_cert():
    ident = settings.signer_identity(LAB_CERT)
    assert ident == {"sha256": hashlib.sha256(LAB_CERT).hexdigest(), "keyid": LAB_SKID,
                     "signer": "kprobes.fleet lab test", "subject": "kprobes.fleet lab test"}
    der = settings.signer_identity(pem_to_der(LAB_CERT))
    assert der["keyid"] == LAB_SKID and der["signer"] == ident["signer"]
    assert der["sha256"] == hashlib.sha256(pem_to_der(LAB_CERT)).hexdigest() != ident["sha256"]


def test_identity_without_skid_is_the_serial():
    ident = settings.signer_identity(NO_SKID_CERT)
    assert ident["keyid"] == "0cf9c7c99f4aec1113ae1f8a2a8d1092d83ae518"
    assert ident["signer"] == ident["subject"] == u"Signer \u00dc"


def test_identity_of_a_ca_issued_cert():
    ident = settings.signer_identity(CA_ISSUED_CERT)
    assert ident["signer"] == "Example Module CA"
    assert ident["subject"] == "Example Module Signer 2026"
    assert ident["keyid"] == "1976aea9f315b4939bafd576d26c3ec637a756ed"


@pytest.mark.parametrize("data", [b"", b"hello", FAKE_KEY, b"0\x82\xff\xff", LAB_CERT[:300] + b"\n-----END CERTIFICATE-----\n",
                                  b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"])
def test_not_a_cert(data):
    with pytest.raises(names.InvalidValue) as exc:
        settings.signer_identity(data, "kprobes_fleet_signing_cert: /x")
    assert str(exc.value) == "kprobes_fleet_signing_cert: /x is not an X.509 certificate (PEM or DER)"


# -- the variables -------------------------------------------------------------------------
# Keys and certs are made at test time with cryptography (what ansible-core depends on).

def make_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key, password=None, fmt=serialization.PrivateFormat.PKCS8):
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


def make_cert(key, cn=u"kprobes.fleet unit test", encoding=serialization.Encoding.PEM):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(encoding)


@pytest.fixture(scope="module")
def pair():
    key = make_key()
    return {"key": key_pem(key), "cert": make_cert(key), "cert_der": make_cert(key, encoding=serialization.Encoding.DER),
            "other_key": key_pem(make_key()), "key_obj": key}


def decrypter(*passwords):
    """The validate action's decrypt, with a loader that holds these vault passwords (as -J would)."""
    loader = DataLoader()
    loader.set_vault_secrets([("default", VaultSecret(p)) for p in passwords])

    class Action(object):
        _loader = loader
    return lambda data, path: validate_action.ActionModule._decrypt(Action(), data, path)


def check(decrypt=None, **values):
    result, errors, dummy = settings.check(values, "h1", ["h1"], check_probes=False,
                                           decrypt=decrypt or decrypter(VAULT_PASSWORD))
    return result, errors


@pytest.fixture
def files(tmp_path, pair):
    return {"key": write(tmp_path / "key.pem", pair["key"], 0o600),
            "cert": write(tmp_path / "cert.pem", pair["cert"], 0o644),
            "cert_der": write(tmp_path / "cert.der", pair["cert_der"], 0o644),
            "key_vault": write(tmp_path / "key.vault", vault(pair["key"]), 0o644),
            "cert_vault": write(tmp_path / "cert.vault", vault(pair["cert"]), 0o644)}


def test_default_is_unsigned():
    result, errors = check()
    assert errors == []
    assert result["kprobes_fleet_signing_key"] == "" and result["kprobes_fleet_signing_cert"] == ""


@pytest.mark.parametrize("key,cert", [("key", "cert"), ("key_vault", "cert"), ("key", "cert_vault"),
                                      ("key_vault", "cert_vault"), ("key", "cert_der")])
def test_key_and_cert_accepted(files, key, cert):
    result, errors = check(kprobes_fleet_signing_key=files[key], kprobes_fleet_signing_cert=files[cert])
    assert errors == []
    assert result["kprobes_fleet_signing_key"] == files[key]


def test_one_file_with_key_and_cert_accepted(tmp_path, pair):
    # the kernel's own signing_key.pem holds both; sign-file takes it as key and as cert
    both = write(tmp_path / "signing_key.pem", pair["cert"] + pair["key"], 0o600)
    dummy, errors = check(kprobes_fleet_signing_key=both, kprobes_fleet_signing_cert=both)
    assert errors == []


def test_traditional_rsa_key_accepted(tmp_path, pair):
    key = write(tmp_path / "rsa.pem", key_pem(pair["key_obj"], fmt=serialization.PrivateFormat.TraditionalOpenSSL),
                0o400)
    dummy, errors = check(kprobes_fleet_signing_key=key, kprobes_fleet_signing_cert=write(
        tmp_path / "c.pem", pair["cert"], 0o444))
    assert errors == []


def test_paths_are_expanded_and_normalised(files, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result, errors = check(kprobes_fleet_signing_key="~/./key.pem", kprobes_fleet_signing_cert="~/cert.pem")
    assert errors == []
    assert result["kprobes_fleet_signing_key"] == str(tmp_path / "key.pem")


@pytest.mark.parametrize("given", ["kprobes_fleet_signing_key", "kprobes_fleet_signing_cert"])
def test_both_or_neither(files, given):
    dummy, errors = check(**{given: files["key" if given.endswith("key") else "cert"]})
    assert errors == ["kprobes_fleet_signing_key and kprobes_fleet_signing_cert: set both kprobes_fleet_signing_key "
                      "and kprobes_fleet_signing_cert (modules are signed) or neither (they are not), got only %s"
                      % given]


def test_key_readable_by_others_refused(files):
    os.chmod(files["key"], 0o644)
    dummy, errors = check(kprobes_fleet_signing_key=files["key"], kprobes_fleet_signing_cert=files["cert"])
    assert errors == ["kprobes_fleet_signing_key: %s is readable by its group and others (mode 0644): a signing key "
                      "must be readable by its owner only (chmod 600 it) or encrypted with ansible-vault"
                      % files["key"]]
    os.chmod(files["key"], 0o640)
    dummy, errors = check(kprobes_fleet_signing_key=files["key"], kprobes_fleet_signing_cert=files["cert"])
    assert "readable by its group (mode 0640)" in errors[0]


@pytest.mark.parametrize("which", ["key", "key_vault", "cert", "cert_vault"])
def test_files_writable_by_others_refused(files, which):
    os.chmod(files[which], 0o602 if which == "key" else 0o646)
    values = {"kprobes_fleet_signing_key": files["key"], "kprobes_fleet_signing_cert": files["cert"]}
    values["kprobes_fleet_signing_" + which.split("_")[0]] = files[which]
    dummy, errors = check(**values)
    assert errors == ["kprobes_fleet_signing_%s: %s is writable by others (mode %s): anyone on the controller could "
                      "replace what the fleet signs with; chmod o-w it"
                      % (which.split("_")[0], files[which], "0602" if which == "key" else "0646")]


def test_a_vaulted_key_may_be_readable(files):
    # documented: the content of a vault file is encrypted; the decrypted key is checked below
    assert os.stat(files["key_vault"]).st_mode & 0o044
    dummy, errors = check(kprobes_fleet_signing_key=files["key_vault"], kprobes_fleet_signing_cert=files["cert"])
    assert errors == []


@pytest.mark.parametrize("variable,value,words", [
    ("kprobes_fleet_signing_key", "relative/key.pem", "must be an absolute path on the controller (or start with ~)"),
    ("kprobes_fleet_signing_key", ["a"], "must be empty (modules are not signed) or the path of a file"),
    ("kprobes_fleet_signing_cert", "/nonexistent/cert.pem", "cannot read /nonexistent/cert.pem on the controller: "
                                                            "No such file or directory"),
    ("kprobes_fleet_signing_cert", "/", "/ is not a regular file"),
    ("kprobes_fleet_signing_key", "/dev/null", "/dev/null is not a regular file"),
])
def test_bad_paths(files, variable, value, words):
    values = {"kprobes_fleet_signing_key": files["key"], "kprobes_fleet_signing_cert": files["cert"]}
    values[variable] = value
    dummy, errors = check(**values)
    assert len(errors) == 1 and errors[0].startswith(variable + ": ") and words in errors[0], errors


def test_swapped_files_refused(files):
    dummy, errors = check(kprobes_fleet_signing_key=files["cert"], kprobes_fleet_signing_cert=files["key"])
    assert sorted(errors) == [
        "kprobes_fleet_signing_cert: %s is not an X.509 certificate (PEM or DER)" % files["key"],
        "kprobes_fleet_signing_key: %s is readable by its group and others (mode 0644): a signing key must be "
        "readable by its owner only (chmod 600 it) or encrypted with ansible-vault" % files["cert"]]
    os.chmod(files["cert"], 0o600)
    dummy, errors = check(kprobes_fleet_signing_key=files["cert"], kprobes_fleet_signing_cert=files["key"])
    assert "is not a PEM private key" in sorted(errors)[1]


def test_unreadable_key_refused(files):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    os.chmod(files["key"], 0o000)
    dummy, errors = check(kprobes_fleet_signing_key=files["key"], kprobes_fleet_signing_cert=files["cert"])
    assert "Permission denied" in errors[0]


# what the files hold, decrypted: each of these used to pass and fail on a builder after the build

GARBAGE_VAULT = b"$ANSIBLE_VAULT;1.1;AES256\nthis is not hex\n"


@pytest.mark.parametrize("which,content,mode,words", [
    # a file that merely starts like a vault file, world-readable: decrypted, so refused
    ("key", GARBAGE_VAULT, 0o644, "is an ansible-vault file that this run cannot decrypt: it starts like one but "
                                  "is not a well-formed vault file"),
    ("cert", b"$ANSIBLE_VAULT", 0o644, "is an ansible-vault file that this run cannot decrypt: it starts like one"),
    # a real vault file whose content is not what it must be
    ("key", vault(b"hello"), 0o644, "is not a PEM private key (-----BEGIN PRIVATE KEY-----)"),
    ("cert", vault(b"hello"), 0o644, "is not an X.509 certificate (PEM or DER)"),
    ("key", "cert_vault", 0o644, "is not a PEM private key"),
    # vaulted with another password
    ("key", VaultLib([("default", VaultSecret(b"other"))]).encrypt(b"x"), 0o600,
     "cannot decrypt: none of the vault passwords of this run opens it"),
])
def test_vault_content_is_checked(tmp_path, files, pair, which, content, mode, words):
    if content == "cert_vault":
        content = vault(pair["cert"])
    values = {"kprobes_fleet_signing_key": files["key"], "kprobes_fleet_signing_cert": files["cert"]}
    values["kprobes_fleet_signing_" + which] = write(tmp_path / "bad", content, mode)
    dummy, errors = check(**values)
    assert len(errors) == 1, errors
    assert errors[0].startswith("kprobes_fleet_signing_%s: %s " % (which, tmp_path / "bad")), errors
    assert words in errors[0], errors


def test_vault_file_without_a_vault_password(files):
    dummy, errors = check(decrypter(), kprobes_fleet_signing_key=files["key_vault"],
                          kprobes_fleet_signing_cert=files["cert"])
    assert errors == ["kprobes_fleet_signing_key: %s is an ansible-vault file that this run cannot decrypt: this run "
                      "has no vault password; give the vault password (--ask-vault-pass, --vault-password-file or "
                      "ANSIBLE_VAULT_PASSWORD_FILE; in AWX, a vault credential)" % files["key_vault"]]


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
@pytest.mark.parametrize("vaulted", [False, True])
def test_key_with_a_passphrase_refused(tmp_path, files, pair, fmt, vaulted):
    data = key_pem(pair["key_obj"], password=b"secret", fmt=fmt)
    key = write(tmp_path / "enc.pem", vault(data) if vaulted else data, 0o600)
    dummy, errors = check(kprobes_fleet_signing_key=key, kprobes_fleet_signing_cert=files["cert"])
    assert errors == ["kprobes_fleet_signing_key: %s is protected by a passphrase, which nobody can type while the "
                      "play signs modules: remove it (openssl pkey -in key.pem -out plain.pem) and protect "
                      "the plain key with ansible-vault encrypt or chmod 600 instead" % key]


@pytest.mark.parametrize("key_file,cert_file", [("other", "cert"), ("other_vault", "cert_vault"), ("other", "cert_der")])
def test_key_of_another_cert_refused(tmp_path, files, pair, key_file, cert_file):
    files["other"] = write(tmp_path / "other.pem", pair["other_key"], 0o600)
    files["other_vault"] = write(tmp_path / "other.vault", vault(pair["other_key"]), 0o600)
    dummy, errors = check(kprobes_fleet_signing_key=files[key_file], kprobes_fleet_signing_cert=files[cert_file])
    assert errors == ["kprobes_fleet_signing_key: %s is not the private key of kprobes_fleet_signing_cert %s (their "
                      "public keys differ): it would make a signature no kernel that trusts this cert accepts; "
                      "give the key the cert was made from" % (files[key_file], files[cert_file])]


def test_damaged_pem_key_refused(tmp_path, files):
    key = write(tmp_path / "bad.pem", FAKE_KEY, 0o600)
    dummy, errors = check(kprobes_fleet_signing_key=key, kprobes_fleet_signing_cert=files["cert"])
    assert errors == ["kprobes_fleet_signing_key: %s holds a PEM private key that does not parse (damaged, or of a "
                      "kind OpenSSL cannot read)" % key]


def test_plan_of_a_vaulted_cert_is_checked_against_its_content(files, pair):
    ident = settings.signer_identity(pair["cert"])
    values = {"kprobes_fleet_signing_cert": files["cert_vault"]}
    settings._check_signer(ident, values, ident["sha256"])
    with pytest.raises(names.InvalidValue, match="is not kprobes_fleet_signing_cert"):
        settings._check_signer(dict(ident, sha256="0" * 64), values, ident["sha256"])


# -- the signer a plan carries (settings.check_plan) ----------------------------------------

def test_plan_signer_must_match_the_configuration(files, pair):
    ident = settings.signer_identity(pair["cert"])
    signed = {"kprobes_fleet_signing_cert": files["cert"]}
    settings._check_signer(ident, signed)
    settings._check_signer(None, {"kprobes_fleet_signing_cert": ""})
    with pytest.raises(names.InvalidValue, match="the plan needs the signer"):
        settings._check_signer(None, signed)
    with pytest.raises(names.InvalidValue, match="signer is set but kprobes_fleet_signing_cert is not"):
        settings._check_signer(ident, {"kprobes_fleet_signing_cert": ""})
    with pytest.raises(names.InvalidValue, match="is not kprobes_fleet_signing_cert"):
        settings._check_signer(dict(ident, sha256="0" * 64), signed)
    # the key id is written into C source: hex only
    with pytest.raises(names.InvalidValue, match="the plan needs the signer"):
        settings._check_signer(dict(ident, keyid='ab"); evil("'), signed)
    # a vaulted cert is checked for shape only (the validate action has no vault secret)
    settings._check_signer(dict(ident, sha256="0" * 64), {"kprobes_fleet_signing_cert": files["cert_vault"]})


# -- the action: build_plan op=plan with a signing cert --------------------------------------

def run_plan(tmp_path, extra_args, extra_vars=None, vault_password=False):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700, exist_ok=True)
    args = dict({"op": "plan", "probes": probe_spec.normalize(None), "kernel": KERNEL, "cache_dir": str(cache)},
                **extra_args)
    env = {}
    if vault_password:
        write(tmp_path / "vault-pass", VAULT_PASSWORD, 0o600)
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(tmp_path / "vault-pass")
    result, out = run_action(REPO, tmp_path, args, extra_vars=extra_vars, env=env)
    shutil.rmtree(str(cache))
    return result, out


def expected_key(signer=None):
    resolved = probe_spec.resolve(probe_spec.normalize(None), KERNEL["functions"])
    spec = probe_spec.spec_hash("kprobes_fleet", resolved, template_sha())
    return build_key(KERNEL["arch"], KERNEL["release"], KERNEL["version"], spec, signer=signer)


def test_plan_without_signing_keeps_the_unsigned_key(tmp_path):
    result, out = run_plan(tmp_path, {})
    assert not result.get("failed"), out
    assert result["plan"]["build_key"] == expected_key()
    assert result["plan"]["signer"] is None
    result, out = run_plan(tmp_path, {"signing_cert": ""})
    assert result["plan"]["build_key"] == expected_key() and result["plan"]["signer"] is None


def test_plan_with_a_signing_cert(tmp_path, files, pair):
    result, out = run_plan(tmp_path, {"signing_cert": files["cert"]})
    assert not result.get("failed"), out
    ident = settings.signer_identity(pair["cert"])
    assert result["plan"]["signer"] == ident
    assert result["plan"]["build_key"] == expected_key(ident["sha256"]) != expected_key()
    assert result["plan"]["build"] is True


def test_plan_decrypts_a_vaulted_cert(tmp_path, files, pair):
    result, out = run_plan(tmp_path, {"signing_cert": files["cert_vault"]}, vault_password=True)
    assert not result.get("failed"), out
    assert result["plan"]["signer"] == settings.signer_identity(pair["cert"])


def test_plan_without_the_argument_uses_the_validated_cert(tmp_path, files, pair):
    valid = {"__kprobes_fleet_valid": {"values": {"kprobes_fleet_signing_cert": files["cert"]}}}
    result, out = run_plan(tmp_path, {}, extra_vars=valid)
    assert result["plan"]["signer"]["sha256"] == hashlib.sha256(pair["cert"]).hexdigest()
    assert result["plan"]["build_key"] == expected_key(hashlib.sha256(pair["cert"]).hexdigest())


def test_plan_with_a_file_that_is_not_a_cert(tmp_path, files):
    result, out = run_plan(tmp_path, {"signing_cert": files["key"]})
    assert result.get("failed") is True
    assert result["msg"] == "signing_cert: %s is not an X.509 certificate (PEM or DER)" % files["key"]


def test_tracefs_plan_has_no_signer(tmp_path, files):
    result, out = run_plan(tmp_path, {"signing_cert": files["cert"], "backend": "tracefs"})
    assert "signer" not in result["plan"] and "build_key" not in result["plan"]


# -- entry points: refused before any host task ------------------------------------------------
# The inventory names loopback only (port 1: refused at once): a run that got past the check
# reports UNREACHABLE instead of the refusal.

def test_entry_points_refuse_half_or_careless_signing(tmp_path, files):
    rc, out = play(REPO, tmp_path, "deploy-probes.yml", {"kprobes_fleet_signing_key": files["key"]})
    assert_refused(rc, out, "set both kprobes_fleet_signing_key and kprobes_fleet_signing_cert", "[ghost1, ghost2]")
    os.chmod(files["key"], 0o604)
    rc, out = play(REPO, tmp_path, "role:kprobes.fleet.probe_deploy",
                   {"kprobes_fleet_signing_key": files["key"], "kprobes_fleet_signing_cert": files["cert"]})
    assert_refused(rc, out, "is readable by others (mode 0604)")


@pytest.mark.parametrize("case", ["garbage_vault", "no_password", "passphrase", "other_key"])
def test_entry_points_check_what_the_signing_files_hold(tmp_path, files, pair, case):
    key, password = files["key_vault"], VAULT_PASSWORD
    if case == "garbage_vault":
        key, words = write(tmp_path / "g.pem", b"$ANSIBLE_VAULT\nanything\n", 0o644), "not a well-formed vault file"
    elif case == "no_password":
        password, words = None, "this run has no vault password"
    elif case == "passphrase":
        key = write(tmp_path / "p.vault", vault(key_pem(pair["key_obj"], password=b"pw")), 0o644)
        words = "is protected by a passphrase"
    else:
        key, words = write(tmp_path / "o.vault", vault(pair["other_key"]), 0o644), "is not the private key of"
    rc, out = play(REPO, tmp_path, "deploy-probes.yml",
                   {"kprobes_fleet_signing_key": key, "kprobes_fleet_signing_cert": files["cert_vault"]},
                   vault_password=password)
    assert_refused(rc, out, "kprobes_fleet_signing_key: %s " % key, words, "[ghost1, ghost2]")


def test_entry_point_accepts_a_vaulted_pair(tmp_path, files):
    rc, out = play(REPO, tmp_path, "deploy-probes.yml",
                   {"kprobes_fleet_signing_key": files["key_vault"], "kprobes_fleet_signing_cert": files["cert_vault"]},
                   vault_password=VAULT_PASSWORD)
    assert "kprobes_fleet_signing" not in out, out
    assert "UNREACHABLE" in out, out  # got past the check to the (closed) loopback port


# -- role variables: the backend choice and the builder's signing steps ------------------------

def render(role_files, variables, name):
    for path in role_files:
        with open(os.path.join(REPO, "roles", path)) as f:
            variables.update(trusted(yaml.safe_load(f) or {}))
    return Templar(loader=DataLoader(), variables=variables).template(variables[name])


def choice(wanted, cert, lockdown="integrity", sig_enforce=False, modules_disabled=False, tracefs=True):
    """The role passes signed=(kprobes_fleet_signing_cert is set); test_backend_choice runs it."""
    kernel = {"kprobes": True, "kretprobes": True, "modules_disabled": modules_disabled, "lockdown": lockdown,
              "sig_enforce": sig_enforce, "tracefs": {"usable": tracefs, "reason": "no tracefs"}}
    return backend_choice(kernel, wanted, signed=len(cert) > 0)


def test_signing_lifts_the_signature_blockers_only():
    assert choice("auto", "")[0] == "tracefs"
    assert choice("auto", "/c.pem")[0] == "module"
    assert choice("auto", "/c.pem", lockdown="none", sig_enforce=True)[0] == "module"
    assert choice("module", "")[0] == "none"
    assert choice("module", "/c.pem") == ["module", "kprobes_fleet_backend=module"]
    # what signing cannot help with stays
    assert choice("module", "/c.pem", modules_disabled=True)[0] == "none"
    assert "module loading is disabled" in choice("auto", "/c.pem", modules_disabled=True)[1]
    assert choice("tracefs", "/c.pem")[0] == "tracefs"


def build_vars(release, signer, config='CONFIG_MODULE_SIG_HASH="sha512"'):
    return {"ansible_facts": {"kprobes_fleet_kernel": {"release": release}},
            "__kprobes_fleet_valid": {"values": {"kprobes_fleet_host_dir": "/var/lib/kf",
                                                 "kprobes_fleet_module_name": "kprobes_fleet",
                                                 "kprobes_fleet_build_host": ""}, "errors": []},
            "__kprobes_fleet_build_plan": {"build_key": "0123456789abcdef", "signer": signer},
            "__kprobes_fleet_sign_config": {"stdout": config}}


def test_unsigned_build_runs_the_same_make():
    argv = render(["probe_build/vars/main.yml"], build_vars("6.1.0-56-amd64", None), "__kprobes_fleet_build_make")
    assert argv == ["make", "-C", "/lib/modules/6.1.0-56-amd64/build", "M=/var/lib/kf/build/0123456789abcdef",
                    "modules"]


def test_signed_build_compiles_the_key_id_in():
    signer = settings.signer_identity(LAB_CERT)
    argv = render(["probe_build/vars/main.yml"], build_vars("6.1.0-56-amd64", signer), "__kprobes_fleet_build_make")
    assert argv[-1] == "CFLAGS_kprobes_fleet.o=-include /var/lib/kf/build/0123456789abcdef/signer.h"


@pytest.mark.parametrize("config,expected", [('CONFIG_MODULE_SIG_HASH="sha512"', "sha512"),
                                             ('CONFIG_MODULE_SIG_HASH="sha3-256"', "sha3-256"),
                                             ('CONFIG_MODULE_SIG_HASH="SHA1"', "SHA1"), ("", "sha256")])
def test_hash_of_the_kernel(config, expected):
    variables = build_vars("6.1.0-56-amd64", None, config=config)
    assert render(["probe_build/vars/main.yml"], variables, "__kprobes_fleet_sign_hash") == expected
