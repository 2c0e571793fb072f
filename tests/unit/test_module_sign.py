"""Modules are signed on the controller (plugins/plugin_utils/module_sign.py, build_plan op=publish).

What the kernel's scripts/sign-file appends, byte for byte; the fields the kernel and modinfo read;
the publish step that signs (vault key, check mode, refusals); and no task that gives a host the key.
Everything runs here: sign-file and a kernel build where this machine has them, ansible-playbook on
localhost (ansible_connection=local) for the action.
"""
import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import struct

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.kprobes.fleet.plugins.action import build_plan as build_plan_action
from ansible_collections.kprobes.fleet.plugins.action import validate as validate_action
from ansible_collections.kprobes.fleet.plugins.module_utils import names
from ansible_collections.kprobes.fleet.plugins.plugin_utils import module_sign, settings
from ansible_collections.kprobes.fleet.plugins.plugin_utils.module_cache import ModuleCache

from test_build_plan_action import K1, run_action
from test_headers_vars import trusted
from test_render import HEADERS, modinfo
from test_signing import VAULT_PASSWORD, build_vars, decrypter, key_pem, render, vault, write

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# sign-file of Debian's linux-kbuild-<version> packages, or of any kernel's headers
SIGN_FILES = sorted({os.path.realpath(p) for p in glob.glob("/usr/lib/linux-kbuild-*/scripts/sign-file")
                     + glob.glob("/lib/modules/*/build/scripts/sign-file") if os.access(p, os.X_OK)})
SIGN_FILE = SIGN_FILES[-1] if SIGN_FILES else None
needs_sign_file = pytest.mark.skipif(
    SIGN_FILE is None, reason="no kernel scripts/sign-file on this machine (/usr/lib/linux-kbuild-*/scripts/, "
                              "/lib/modules/*/build/scripts/; Debian: linux-kbuild-<version>)")
OPENSSL = shutil.which("openssl")
MODINFO = shutil.which("modinfo", path="/usr/sbin:/sbin:" + os.environ.get("PATH", ""))
MAGIC = b"~Module signature appended~\n"
KO = b"\x7fELF" + bytes(range(256)) * 12 + b"\n\r\n~Module signature appended~ in the middle is fine\n"


def name(cn, org=None):
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    return x509.Name(attributes + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(subject_key, subject, issuer_key=None, issuer=None, serial=None, skid=True):
    """A cert for subject_key (self-signed unless an issuer is given), as DER-able x509.Certificate."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(subject_key.public_key()).serial_number(serial or x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650)))
    if skid:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()),
                                        critical=False)
    return builder.sign(issuer_key or subject_key, hashes.SHA256())


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def rsa_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, issue(key, name(u"kprobes.fleet unit test"))


@pytest.fixture(scope="module", params=["self-signed-2048", "ca-issued-4096-no-skid"])
def signer(request):
    """A key and its cert: a self-signed one, and one a CA issued (the signature names the CA and
    the serial; a 4096-bit key makes every length of the PKCS#7 take two bytes)."""
    if request.param == "self-signed-2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key, issue(key, name(u"kprobes.fleet unit test"))
    ca = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    cert = issue(key, name(u"Module signer \u00dc", u"Acme"), ca, name(u"Acme module CA", u"Acme"),
                 serial=0x8a11, skid=False)
    return key, cert


def sign_file(tmp_path, hash_name, key, cert, ko):
    """What the kernel's sign-file appends to ko (the key and cert as PEM files, the module a copy)."""
    write(tmp_path / "sf-key.pem", key_pem(key), 0o600)
    write(tmp_path / "sf-cert.pem", pem(cert), 0o644)
    (tmp_path / "sf.ko").write_bytes(ko)
    subprocess.run([SIGN_FILE, hash_name, str(tmp_path / "sf-key.pem"), str(tmp_path / "sf-cert.pem"),
                    str(tmp_path / "sf.ko")], check=True, capture_output=True)
    return (tmp_path / "sf.ko").read_bytes()


def split(signed, ko=KO):
    """(PKCS#7 DER, the struct module_signature fields) of a signed module."""
    assert signed[:len(ko)] == ko and signed.endswith(MAGIC)
    fields = struct.unpack(">BBBBB3sI", signed[-len(MAGIC) - 12:-len(MAGIC)])
    der = signed[len(ko):-len(MAGIC) - 12]
    return der, fields


def asn1(der, tmp_path):
    """openssl asn1parse of der: (depth, kind, value) per line, no offsets nor lengths."""
    (tmp_path / "sig.p7").write_bytes(der)
    out = subprocess.run([OPENSSL, "asn1parse", "-inform", "DER", "-in", str(tmp_path / "sig.p7"), "-i"],
                         check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*\d+:d=(\d+)\s+hl=\d+\s+l=\s*\d+\s+(prim|cons):\s*(.*)$", line)
        assert m, line
        rows.append((int(m.group(1)), m.group(2), " ".join(m.group(3).split())))
    return rows


# -- (a) byte for byte what sign-file makes ------------------------------------------------------

@needs_sign_file
@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_identical_to_sign_file(tmp_path, signer, hash_name):
    """RSA PKCS#1 v1.5 is deterministic, so the whole signed module must be sign-file's, byte for byte.

    Skipped only where this machine has no kernel scripts/sign-file (see SIGN_FILES)."""
    key, cert = signer
    ours = module_sign.sign_module(KO, key, cert, hash_name)
    assert ours == sign_file(tmp_path, hash_name, key, cert, KO)


@needs_sign_file
@pytest.mark.skipif(OPENSSL is None, reason="no openssl command to read the PKCS#7 with")
def test_ecdsa_is_sign_files_but_for_the_random_signature(tmp_path):
    """ECDSA signatures are random: the same structure (openssl asn1parse), both verify (openssl cms)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(key, name(u"kprobes.fleet ec test"))
    ours, theirs = split(module_sign.sign_module(KO, key, cert, "sha256")), split(sign_file(
        tmp_path, "sha256", key, cert, KO))
    assert ours[1][:5] == theirs[1][:5] == (0, 0, 2, 0, 0)
    masked = [[row if "HEX DUMP" not in row[2] else row[:2] for row in asn1(der, tmp_path)]
              for der in (ours[0], theirs[0])]
    assert masked[0] == masked[1]
    assert (6, "prim", "OBJECT :ecdsa-with-SHA256") in masked[0]
    for der, dummy in (ours, theirs):
        cms_verify(tmp_path, der, cert, KO)


# -- (b) what the kernel and modinfo read back -------------------------------------------------

def cms_verify(tmp_path, der, cert, content):
    """OpenSSL checks the detached signature over content with cert (given: the PKCS#7 carries none)."""
    (tmp_path / "v.p7").write_bytes(der)
    (tmp_path / "v.ko").write_bytes(content)
    (tmp_path / "v.pem").write_bytes(pem(cert))
    res = subprocess.run([OPENSSL, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "v.p7"),
                          "-content", str(tmp_path / "v.ko"), "-certfile", str(tmp_path / "v.pem"), "-nointern",
                          "-noverify", "-out", os.devnull], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "Verification successful" in res.stderr, res.stderr


@pytest.mark.parametrize("hash_name,hash_cls", [("sha256", hashes.SHA256), ("sha512", hashes.SHA512)])
def test_the_appended_signature_reads_back(tmp_path, rsa_pair, hash_name, hash_cls):
    key, cert = rsa_pair
    signed = module_sign.sign_module(KO, key, cert, hash_name)
    der, (algo, hash_id, id_type, signer_len, key_id_len, pad, sig_len) = split(signed)
    # struct module_signature: only id_type (PKEY_ID_PKCS7) and sig_len are set, as sign-file does
    assert (algo, hash_id, id_type, signer_len, key_id_len, pad) == (0, 0, 2, 0, 0, b"\0\0\0")
    assert sig_len == len(der) and len(signed) == len(KO) + len(der) + 12 + 28
    # one DER SEQUENCE, exactly sig_len long (the kernel reads the PKCS#7 from its end)
    assert der[0] == 0x30 and der[1] == 0x82 and int.from_bytes(der[2:4], "big") == len(der) - 4
    # signer named by issuer and serial, no cert inside, SHA-2 digest identifiers without NULL
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")
    assert cert.issuer.public_bytes() + b"\x02" + bytes([len(serial)]) + serial in der
    assert cert.public_bytes(serialization.Encoding.DER) not in der
    assert pem(cert) not in signed
    oid = {"sha256": b"\x01", "sha512": b"\x03"}[hash_name]
    assert der.count(b"\x30\x0b\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02" + oid) == 2
    assert b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02" + oid + b"\x05\x00" not in der
    # the signature itself: PKCS#1 v1.5 over the whole module (no signed attributes), last in the DER
    cert.public_key().verify(der[-256:], KO, padding.PKCS1v15(), hash_cls())
    if OPENSSL:
        cms_verify(tmp_path, der, cert, KO)


def test_refusals_are_one_sentence(rsa_pair):
    key, cert = rsa_pair
    with pytest.raises(names.InvalidValue) as exc:
        module_sign.sign_module(KO, key, cert, "sha1")
    assert str(exc.value) == ("this kernel signs modules with 'sha1' (CONFIG_MODULE_SIG_HASH), and kprobes.fleet "
                              "signs them with sha256, sha384 or sha512 only")
    with pytest.raises(names.InvalidValue, match="already ends with a module signature"):
        module_sign.sign_module(module_sign.sign_module(KO, key, cert, "sha256"), key, cert, "sha256")
    with pytest.raises(names.InvalidValue) as exc:
        module_sign.sign_module(KO, ed25519.Ed25519PrivateKey.generate(), cert, "sha256")
    assert str(exc.value) == ("kprobes_fleet_signing_key holds a private key of type Ed25519, and the kernel "
                              "checks module signatures made with RSA or ECDSA keys only")


def test_validation_refuses_a_key_the_kernel_cannot_check(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name(u"ed")).issuer_name(name(u"ed")).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, None))
    values = {"kprobes_fleet_signing_key": write(tmp_path / "ed.pem", key_pem(key), 0o600),
              "kprobes_fleet_signing_cert": write(tmp_path / "ed.crt", pem(cert), 0o644)}
    dummy, errors, dummy2 = settings.check(values, "h1", ["h1"], check_probes=False, decrypt=decrypter(VAULT_PASSWORD))
    assert errors == ["kprobes_fleet_signing_key: %s holds a private key of type Ed25519, and the kernel checks "
                      "module signatures made with RSA or ECDSA keys only" % values["kprobes_fleet_signing_key"]]


def test_the_roles_hashes_are_the_signers():
    with open(os.path.join(REPO, "roles", "probe_build", "vars", "main.yml")) as f:
        role = yaml.safe_load(f)
    assert role["__kprobes_fleet_sign_hashes"] == sorted(module_sign.HASHES)


@pytest.mark.parametrize("config,ok", [('CONFIG_MODULE_SIG_HASH="sha384"', True), ("", True),
                                       ('CONFIG_MODULE_SIG_HASH="sha1"', False)])
def test_the_builder_stops_on_a_hash_the_controller_cannot_sign_with(config, ok):
    """The check before anything is written on the builder, in the signer's words."""
    with open(os.path.join(REPO, "roles", "probe_build", "tasks", "main.yml")) as f:
        block = yaml.safe_load(f)[1]["block"]
    names_ = [t["name"] for t in block]
    check = block[names_.index("Check that the controller can sign with that hash")]
    assert names_.index("Read the kernel's module signature hash (CONFIG_MODULE_SIG_HASH, else sha256)") \
        < names_.index("Check that the controller can sign with that hash") \
        < names_.index("Create our root-only working directory (only if it is ours or new)")
    variables = build_vars("6.1.0-56-amd64", settings.signer_identity(pem(issue(
        ec.generate_private_key(ec.SECP256R1()), name(u"x")))), config=config)
    variables.update(inventory_hostname="localhost",
                     __check=trusted("{{ %s }}" % check["ansible.builtin.assert"]["that"]),
                     __msg=trusted(check["ansible.builtin.assert"]["fail_msg"]))
    assert render(["probe_build/vars/main.yml"], dict(variables), "__check") is ok
    if not ok:
        msg = render(["probe_build/vars/main.yml"], dict(variables), "__msg")
        assert msg == ("Cannot sign kprobes_fleet for 6.1.0-56-amd64: this kernel signs modules with 'sha1' "
                       "(CONFIG_MODULE_SIG_HASH in /lib/modules/6.1.0-56-amd64/build/.config on localhost), and "
                       "kprobes.fleet signs them with sha256, sha384 or sha512 only")


# a real module: built against this machine's kernel headers, signed here, read by modinfo

@pytest.fixture(scope="module")
def real_module(tmp_path_factory, rsa_pair):
    """A module built as the role builds one (signer.h compiled in), signed as the controller signs it."""
    if not HEADERS or not shutil.which("make"):
        pytest.skip("no configured kernel headers (or no make) to build a module against")
    key, cert = rsa_pair
    ident = settings.signer_identity(pem(cert))
    build = tmp_path_factory.mktemp("signed-module")
    (build / "Kbuild").write_text("obj-m := kpf_sign_test.o\n")
    (build / "kpf_sign_test.c").write_text(
        '#include <linux/module.h>\nMODULE_LICENSE("GPL");\nMODULE_INFO(marker, "kprobes.fleet");\n'
        "static int __init t_init(void) { return 0; }\nstatic void __exit t_exit(void) { }\n"
        "module_init(t_init);\nmodule_exit(t_exit);\n")
    (build / "signer.h").write_text('#include <linux/module.h>\nMODULE_INFO(signer_keyid, "%s");\n' % ident["keyid"])
    subprocess.run(["make", "-C", HEADERS[-1], "M=%s" % build, "modules",
                    "CFLAGS_kpf_sign_test.o=-include %s/signer.h" % build], check=True, capture_output=True,
                   timeout=600)
    unsigned = (build / "kpf_sign_test.ko").read_bytes()
    signed = build / "signed.ko"
    signed.write_bytes(module_sign.sign_module(unsigned, key, cert, "sha256"))
    return {"unsigned": unsigned, "signed": str(signed), "ident": ident, "key": key, "cert": cert, "dir": build}


@pytest.mark.compile
@needs_sign_file
def test_a_real_module_is_signed_as_sign_file_signs_it(real_module):
    """Skipped only where there are no kernel headers or no sign-file on this machine."""
    with open(real_module["signed"], "rb") as f:
        ours = f.read()
    theirs = sign_file(real_module["dir"], "sha256", real_module["key"], real_module["cert"], real_module["unsigned"])
    assert ours == theirs
    assert modinfo(ours)["signer_keyid"] == [real_module["ident"]["keyid"]]  # still in .modinfo, past the ELF


@pytest.mark.compile
@pytest.mark.skipif(MODINFO is None, reason="no modinfo (kmod) on this machine")
def test_modinfo_reads_the_controllers_signature(real_module):
    """What probe_module and a person see: signer, the serial as sig_key, the hash, signer_keyid."""
    def field(name):
        return subprocess.run([MODINFO, "-F", name, real_module["signed"]], check=True, capture_output=True,
                              text=True).stdout.strip()

    cert, ident = real_module["cert"], real_module["ident"]
    assert field("sig_id") == "PKCS#7"
    assert field("signer_keyid") == ident["keyid"]
    if field("signer"):  # kmod built with libcrypto
        assert field("signer") == "kprobes.fleet unit test"
        assert field("sig_hashalgo") == "sha256"
        serial = "%x" % cert.serial_number
        assert field("sig_key").replace(":", "").lower().lstrip("0") == serial.lstrip("0")
        assert field("sig_key").replace(":", "").lower() != ident["keyid"]  # the SKID is not in the signature


# -- the publish step signs, on the controller ----------------------------------------------------

@pytest.fixture
def signing(tmp_path, rsa_pair):
    key, cert = rsa_pair
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    cache = ModuleCache(str(cache_dir), "kprobes_fleet")
    assert cache.claim(K1, "localhost", 1800)
    staged = cache.staged(K1, "localhost")
    with open(staged, "wb") as f:
        f.write(KO)
    os.chmod(staged, 0o644)  # as fetch leaves it
    write(tmp_path / "vault-pass", VAULT_PASSWORD, 0o600)
    return {"cache": cache, "staged": staged, "key": key, "cert": cert,
            "key_vault": write(tmp_path / "key.vault", vault(key_pem(key)), 0o644),
            "cert_pem": write(tmp_path / "cert.pem", pem(cert), 0o644),
            "signer": settings.signer_identity(pem(cert)),
            "env": {"ANSIBLE_VAULT_PASSWORD_FILE": str(tmp_path / "vault-pass")}}


def publish(tmp_path, s, check=False, **extra):
    args = dict({"op": "publish", "build_key": K1, "staged": s["staged"], "cache_dir": s["cache"].root,
                 "meta": {"release": "6.1.0-50-amd64", "signer": s["signer"]}, "signing_key": s["key_vault"],
                 "signing_cert": s["cert_pem"], "signing_hash": "sha512"}, **extra)
    return run_action(REPO, tmp_path, args, check=check, env=s["env"])


def test_publish_signs_with_a_vaulted_key(tmp_path, signing):
    result, out = publish(tmp_path, signing)
    assert not result.get("failed"), out
    cache = signing["cache"]
    with open(cache.ko(K1), "rb") as f:
        published = f.read()
    assert published == module_sign.sign_module(KO, signing["key"], signing["cert"], "sha512")
    assert result["sha256"] == hashlib.sha256(published).hexdigest() == cache.sha256_of(K1)
    meta = cache.lookup(K1)
    assert meta["sig_hash"] == "sha512" and meta["signer"] == signing["signer"]
    assert not os.path.exists(signing["staged"]) and not glob.glob(cache.root + "/*.signing-*")
    assert not glob.glob(cache.root + "/*.lock")
    assert "BEGIN" not in out and "PRIVATE" not in out


def test_publish_in_check_mode_signs_nothing(tmp_path, signing):
    result, out = publish(tmp_path, signing, check=True)
    assert not result.get("failed") and "check mode" in result["msg"], out
    with open(signing["staged"], "rb") as f:
        assert f.read() == KO
    assert not os.path.exists(signing["cache"].entry(K1))


@pytest.mark.parametrize("case,words", [
    ("hash", "this kernel signs modules with 'sha3-256' (CONFIG_MODULE_SIG_HASH), and kprobes.fleet signs them with "
             "sha256, sha384 or sha512 only"),
    ("other_cert", "build plan: signer %s is not signing_cert"),
    ("unsigned_plan", "signing_key and signing_cert are given but meta.signer is empty"),
    ("no_key", "meta.signer says this module is signed: op=publish needs signing_key, signing_cert and signing_hash"),
    ("no_vault_password", "is an ansible-vault file that this run cannot decrypt: this run has no vault password"),
])
def test_publish_refuses_before_the_cache_is_written(tmp_path, monkeypatch, signing, case, words):
    extra = {}
    if case == "hash":
        extra["signing_hash"] = "sha3-256"
    elif case == "other_cert":
        extra["meta"] = {"signer": dict(signing["signer"], sha256="0" * 64)}
        words = words % ("0" * 64)
    elif case == "unsigned_plan":
        extra["meta"] = {"signer": None}
    elif case == "no_key":
        extra["signing_key"] = ""
    else:
        monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
        signing["env"] = {}
    result, out = publish(tmp_path, signing, **extra)
    assert result.get("failed") is True, out
    assert words in result["msg"], result["msg"]
    with open(signing["staged"], "rb") as f:
        assert f.read() == KO
    assert not os.path.exists(signing["cache"].entry(K1))


def test_an_unsigned_publish_is_unchanged(tmp_path, signing):
    result, out = publish(tmp_path, signing, meta={"signer": None}, signing_key="", signing_cert="")
    assert not result.get("failed"), out
    with open(signing["cache"].ko(K1), "rb") as f:
        assert f.read() == KO
    assert "sig_hash" not in signing["cache"].lookup(K1)


# -- (c) no task gives a host the key -----------------------------------------------------------

CONTROLLER_ONLY = {"kprobes.fleet.validate": validate_action, "kprobes.fleet.build_plan": build_plan_action}
TASK_KEYS = ("block", "rescue", "always")


def tasks_of(path):
    with open(path) as f:
        todo = list(yaml.safe_load(f) or [])
    while todo:
        task = todo.pop()
        if not isinstance(task, dict):
            continue
        for key in TASK_KEYS + ("tasks", "pre_tasks", "post_tasks", "handlers"):
            todo.extend(task.get(key) or [])
        yield task


def test_no_task_gives_a_host_the_signing_key():
    """The key is read by the two controller-only actions and nothing else: no copy, template,
    fetch, synchronize, command or delegated task of any role or playbook names it (directly or
    through a role variable that names it)."""
    holders = {"kprobes_fleet_signing_key"}
    for path in glob.glob(os.path.join(REPO, "roles", "*", "vars", "*.yml")):
        with open(path) as f:
            for var, value in (yaml.safe_load(f) or {}).items():
                if "signing_key" in json.dumps(value):
                    holders.add(var)
    files = (glob.glob(os.path.join(REPO, "roles", "*", "tasks", "*.yml"))
             + glob.glob(os.path.join(REPO, "roles", "*", "handlers", "*.yml"))
             + glob.glob(os.path.join(REPO, "playbooks", "*.yml")))
    seen = []
    for path in files:
        for task in tasks_of(path):
            own = {k: v for k, v in task.items() if k not in TASK_KEYS}
            if not any(h in json.dumps(own, default=str) for h in holders):
                continue
            action = [k for k in own if k in CONTROLLER_ONLY or "." in k or k in ("copy", "template", "command")]
            where = "%s: %s" % (os.path.relpath(path, REPO), task.get("name"))
            assert action and action[0] in CONTROLLER_ONLY, "%s hands the signing key to a module: %s" % (where, own)
            assert "delegate_to" not in own, where
            assert CONTROLLER_ONLY[action[0]].ActionModule._requires_connection is False, where
            seen.append(action[0])
    assert sorted(set(seen)) == sorted(CONTROLLER_ONLY)  # validate checks the key, build_plan signs with it
    assert not os.path.exists(os.path.join(REPO, "roles", "probe_build", "tasks", "sign.yml"))
    for path in files:  # and no builder needs sign-file any more
        assert not [t for t in tasks_of(path) if "sign-file" in json.dumps(t, default=str)], path
