"""A private CA and the certificates of a dev/test cluster, made with openssl and keytool.

One server certificate serves every node (they all listen on 127.0.0.1, named in its
subjectAltName, so hostname checking holds); its subject ``CN=broker`` is the principal the
nodes present to each other on their SSL listeners (a super user). Files, under a dir::

    ca.pem ca.key           the CA (clients trust ca.pem: LEADFLOW_KAFKA_SSL_CAFILE)
    broker.p12              the nodes' keystore (key + certificate + CA chain)
    truststore.p12          the CA, for the nodes
    <name>.pem <name>.key   client certificates made by `client_certificate` (mTLS)
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cli.kafka.config import BrokerError

DAYS = "30"
BROKER_PRINCIPAL = "User:CN=broker"


@dataclass(frozen=True)
class TlsFiles:
    dir: Path
    store_password: str = field(repr=False)

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.dir / "broker.p12"

    @property
    def truststore(self) -> Path:
        return self.dir / "truststore.p12"


def _run(command: str, cwd: Path) -> None:
    """Run `command` (split as a shell would, no shell involved) in `cwd`."""
    cmd = shlex.split(command)
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise BrokerError(f"{cmd[0]} not found: openssl and keytool (a JDK) are needed") from exc
    if done.returncode != 0:
        # The command without its arguments: they hold the store password.
        raise BrokerError(f"{cmd[0]} {cmd[1]} failed in {cwd}: {done.stderr[-2000:]}")


def _sign(directory: Path, name: str, subject: str, extensions: str) -> None:
    """`name`.key and `name`.pem: a new key and its certificate signed by the CA."""
    _run(
        f"openssl req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj '{subject}'",
        directory,
    )
    (directory / f"{name}.ext").write_text(extensions)
    _run(
        f"openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        f"-out {name}.pem -days {DAYS} -sha256 -extfile {name}.ext",
        directory,
    )
    (directory / f"{name}.key").chmod(0o600)


def make_tls(directory: Path, hosts: Sequence[str] = ()) -> TlsFiles:
    """The CA, the nodes' keystore and truststore in `directory` (made once; kept after);
    the server certificate names 127.0.0.1, localhost and `hosts`. `public/ca.pem` is the
    CA alone, for clients to mount (the rest holds private keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    password_file = directory / "store-password"
    if password_file.exists() and (directory / "truststore.p12").exists():
        return TlsFiles(directory, password_file.read_text().strip())
    for tool in ("openssl", "keytool"):
        if shutil.which(tool) is None:
            raise BrokerError(f"{tool} not found: needed to make the cluster's certificates")
    password = secrets.token_hex(16)
    _run(
        f"openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days {DAYS} "
        "-subj '/CN=Leadflow dev CA' -addext basicConstraints=critical,CA:TRUE "
        "-addext keyUsage=critical,keyCertSign,cRLSign",
        directory,
    )
    (directory / "ca.key").chmod(0o600)
    _sign(
        directory,
        "broker",
        "/CN=broker",
        f"subjectAltName=IP:127.0.0.1,{','.join(f'DNS:{h}' for h in ('localhost', *hosts))}\n"
        "extendedKeyUsage=serverAuth,clientAuth\n",
    )
    _run(
        "openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem "
        f"-name broker -out broker.p12 -passout pass:{password}",
        directory,
    )
    _run(
        "keytool -importcert -noprompt -alias ca -file ca.pem -keystore truststore.p12 "
        f"-storetype PKCS12 -storepass {password}",
        directory,
    )
    (directory / "public").mkdir(exist_ok=True)
    shutil.copyfile(directory / "ca.pem", directory / "public" / "ca.pem")
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return TlsFiles(directory, password)


def client_certificate(files: TlsFiles, name: str) -> tuple[Path, Path]:
    """A client certificate `CN=<name>` and its key (PEM) signed by the CA, for mTLS."""
    _sign(files.dir, name, f"/CN={name}", "extendedKeyUsage=clientAuth\n")
    return files.dir / f"{name}.pem", files.dir / f"{name}.key"
