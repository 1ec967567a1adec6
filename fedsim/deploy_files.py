"""The files of a deployment that must stay private (keys, the database) and the certificates.

Private files are 0600 from their creation (``os.open`` with ``O_CREAT | O_EXCL``: no window in
which another user could read them, and never written through an existing file or link), their
folders 0700.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "certificates", "private_dir", "private_file", "ssh_key"]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(folder: Path) -> None:
    """``folder`` (and missing parents), not readable by group or others."""
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if folder.stat().st_mode & 0o077:  # made before (by older fedsim, or by hand): close it
        folder.chmod(PRIVATE_DIR)


def private_file(path: Path, data: bytes, exist_ok: bool = False) -> None:
    """Write ``data`` to a new file that is 0600 from its creation (O_EXCL: never through a
    file or link that is already there); with ``exist_ok``, an existing file is kept, made
    private if it was not."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        if not exist_ok:
            raise
        if path.stat().st_mode & 0o077:
            path.chmod(PRIVATE_FILE)
        return
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def certificates(folder: Path, hosts: list[str]) -> None:
    """A CA, and a server certificate it signs for ``hosts`` (and localhost, 127.0.0.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    private_dir(folder)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsim deployment CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in dict.fromkeys([*hosts, "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    private = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_file(folder / "server.key", private)
    (folder / "server.pem").write_bytes(server.public_bytes(pem))
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))  # last: its presence means "made"


def ssh_key(path: Path, comment: str) -> None:
    """An ECDSA P-384 key pair in OpenSSH format (what SuperNode authentication takes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_dir(path.parent)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private_file(path, private)
    Path(f"{path}.pub").write_bytes(public + f" {comment}\n".encode())
