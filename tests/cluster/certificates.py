"""The certificates a test control plane needs, made with ``cryptography``: a CA, the API
server's serving certificate for 127.0.0.1, client certificates, the ServiceAccount key."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key, written to ``<stem>.crt`` / ``<stem>.key``."""

    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """SEC1 ("EC PRIVATE KEY"): the form every Kubernetes component reads."""
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _write(folder: Path, stem: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> KeyPair:
    pair = KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key),
                   folder / f"{stem}.crt", folder / f"{stem}.key")
    pair.cert_path.write_bytes(pair.cert_pem)
    pair.key_path.write_bytes(pair.key_pem)
    pair.key_path.chmod(0o600)
    return pair


class CertificateAuthority:
    """A self-signed CA that signs serving and client certificates into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._key = _key()
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name("meltguard-test-ca")).issuer_name(_name("meltguard-test-ca"))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256()))
        self.pair = _write(folder, "ca", self._cert, self._key)

    def _issue(self, stem: str, subject: x509.Name, usage: x509.ObjectIdentifier,
               names: list[x509.GeneralName]) -> KeyPair:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self._cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _write(self.folder, stem, builder.sign(self._key, hashes.SHA256()), key)

    def serving(self, stem: str) -> KeyPair:
        """A server certificate for 127.0.0.1 and the in-cluster names of the API server."""
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            *(x509.DNSName(name) for name in ("localhost", "kubernetes", "kubernetes.default",
                                              "kubernetes.default.svc"))]
        return self._issue(stem, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, names)

    def client(self, stem: str, user: str, group: str | None = None) -> KeyPair:
        """A client certificate: the API server takes CN as the user name, O as a group."""
        return self._issue(stem, _name(user, group), ExtendedKeyUsageOID.CLIENT_AUTH, [])


def signing_key(path: Path) -> Path:
    """A private key for signing ServiceAccount tokens (ES256); the API server verifies with it."""
    path.write_bytes(_key_pem(_key()))
    path.chmod(0o600)
    return path
