# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sign a kernel module on the controller, byte for byte as the kernel's scripts/sign-file does.

A module signature is a detached PKCS#7 (CMS) SignedData over the whole ``.ko``: no certificates,
no signed attributes, the signer named by its cert's issuer and serial (sign-file: CMS_NOCERTS |
CMS_BINARY | CMS_NOSMIMECAP | CMS_NOATTR). It is appended to the module, followed by
``struct module_signature`` (include/linux/module_signature.h: algo, hash, id_type = PKEY_ID_PKCS7,
signer_len, key_id_len, 3 bytes of padding, then the big-endian length of the PKCS#7) and the
trailer ``~Module signature appended~\\n``. tests/unit/test_module_sign.py compares the result with
sign-file's.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import struct

try:  # ansible-core itself depends on cryptography; only ansible-test's bare import check runs without it
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import pkcs7
except ImportError:  # pragma: no cover
    hashes = serialization = ec = rsa = pkcs7 = None

from ansible_collections.kprobes.fleet.plugins.module_utils import names

MAGIC = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2
# struct module_signature: u8 algo, hash, id_type, signer_len, key_id_len, pad[3]; __be32 sig_len
MODULE_SIGNATURE = struct.Struct(">BBBBB3xI")
# CONFIG_MODULE_SIG_HASH values this signer supports, and the DER of their OIDs (2.16.840.1.101.3.4.2.x)
HASHES = {"sha256": "SHA256", "sha384": "SHA384", "sha512": "SHA512"}
_HASH_OIDS = {b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02" + bytes([n]) for n in (1, 2, 3)}
# sign-file's CMS_DETACHED, CMS_NOATTR (no signed attributes, so no S/MIME capabilities), CMS_NOCERTS, CMS_BINARY
_OPTIONS = ("DetachedSignature", "NoAttributes", "NoCerts", "Binary")


def check_hash(name, what="this kernel"):
    """The cryptography hash of a CONFIG_MODULE_SIG_HASH value; refuses the ones not supported."""
    if name not in HASHES:
        raise names.InvalidValue("%s signs modules with %s (CONFIG_MODULE_SIG_HASH), and kprobes.fleet signs them "
                                 "with sha256, sha384 or sha512 only" % (what, names.shown(name)))
    return getattr(hashes, HASHES[name])()


def check_key(key, what="kprobes_fleet_signing_key"):
    """Refuse a private key the kernel cannot check a module signature of (RSA and ECDSA only)."""
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise names.InvalidValue("%s holds a private key of type %s, and the kernel checks module signatures "
                                 "made with RSA or ECDSA keys only" % (what, type(key).__name__.replace("PrivateKey", "")))
    return key


def sign_module(ko, key, cert, hash_name):
    """``ko`` (bytes) with its signature appended, as ``sign-file <hash_name> <key> <cert>`` makes it.

    ``key``: the cryptography private key of ``cert`` (an x509.Certificate); the caller has checked
    that they belong together (settings.check_signing). A module that already ends with a signature
    is refused (``make modules`` never signs, so it was signed by something else)."""
    algorithm = check_hash(hash_name)
    check_key(key)
    ko = bytes(ko)
    if ko.endswith(MAGIC):
        raise names.InvalidValue("the module already ends with a module signature (make modules signs nothing): "
                                 "refusing to sign it twice")
    der = pkcs7.PKCS7SignatureBuilder().set_data(ko).add_signer(cert, key, algorithm).sign(
        serialization.Encoding.DER, [getattr(pkcs7.PKCS7Options, o) for o in _OPTIONS])
    der = _absent_hash_parameters(der)
    return ko + der + MODULE_SIGNATURE.pack(0, 0, PKEY_ID_PKCS7, 0, 0, len(der)) + MAGIC


# cryptography writes the digest AlgorithmIdentifiers of SHA-2 with NULL parameters, OpenSSL (so
# sign-file) without; RFC 5754, section 2, asks for the latter, and the kernel reads only the OID.
# Rewriting them (DER, lengths recomputed) makes the signature byte for byte sign-file's. The
# signatureAlgorithm (rsaEncryption, NULL) is not a digest identifier and keeps its NULL, as in OpenSSL.

def _elements(der):
    """The (tag, content) pairs of a DER string (one-byte tags, definite lengths)."""
    i = 0
    while i < len(der):
        tag, length = der[i], der[i + 1]
        i += 2
        if tag & 0x1f == 0x1f or length == 0x80:
            raise ValueError("not the DER of a PKCS#7 signature")
        if length & 0x80:
            size = length & 0x7f
            length = int.from_bytes(der[i:i + size], "big")
            i += size
        if i + length > len(der):
            raise ValueError("not the DER of a PKCS#7 signature")
        yield tag, der[i:i + length]
        i += length


def _encode(tag, content):
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _absent_hash_parameters(der):
    out = []
    for tag, content in _elements(der):
        if tag == 0x30 and content.endswith(b"\x05\x00") and content[:-2] in _HASH_OIDS:
            content = content[:-2]  # SEQUENCE { OID sha-2, NULL } -> SEQUENCE { OID sha-2 }
        elif tag & 0x20:  # constructed: SEQUENCE, SET, [0]
            content = _absent_hash_parameters(content)
        out.append(_encode(tag, content))
    return b"".join(out)
