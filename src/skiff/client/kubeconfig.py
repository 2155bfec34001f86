"""Where the API server is and how to prove who we are: kubeconfig files.

Every component (controllers, scheduler, node agent, CLI tools) starts from a
kubeconfig, as client-go's `clientcmd` does: the current context names a
cluster (server URL, CA) and a user (client certificate and key, or a bearer
token). This module reads that once at start-up (plain blocking file reads,
before the event loop is busy) and turns it into a `ClientConfig` holding a
ready `ssl.SSLContext`.

Supported: `KUBECONFIG` with several files (merged, first one wins per name,
like kubectl), `certificate-authority` / `certificate-authority-data`,
`client-certificate` / `client-key` (files or `-data`), `token` /
`tokenFile`, `insecure-skip-tls-verify`, `tls-server-name`, a context's
namespace. Relative file paths are relative to the kubeconfig that names them.
Not supported: exec and auth-provider plugins, basic auth, proxies.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]


class KubeconfigError(ValueError):
    """The kubeconfig is missing, unreadable or does not describe a usable context."""


@dataclass(frozen=True)
class ClientConfig:
    """Everything a `Client` needs to reach one API server."""

    server: str
    ssl_context: ssl.SSLContext | None
    token: str | None = None
    namespace: str = "default"
    tls_server_name: str | None = None  # the name to verify the serving certificate against, if not the URL's host
    ca_pem: bytes | None = None  # the cluster's CA certificate(s), as the kubeconfig gives them
    unix_socket: str | None = None  # connect here instead of to the URL's host (`skiff.client.local`)


def default_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """The kubeconfig files to read: `$KUBECONFIG` (os.pathsep-separated) or ~/.kube/config."""
    env = os.environ if env is None else env
    raw = env.get("KUBECONFIG", "")
    paths = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
    return paths or [Path.home() / ".kube" / "config"]


def load_kubeconfig(
    path: str | os.PathLike[str] | None = None, *, context: str | None = None, env: Mapping[str, str] | None = None
) -> ClientConfig:
    """Load the `ClientConfig` of `context` (default: the current context).

    `path` wins over `$KUBECONFIG`, which wins over ~/.kube/config.
    """
    paths = [Path(path)] if path is not None else default_paths(env)
    docs = [(p, _read(p)) for p in paths if path is not None or p.exists()]
    if not docs:
        raise KubeconfigError(f"no kubeconfig found (looked at {', '.join(map(str, paths))})")
    return config_from_dicts(docs, context=context)


def config_from_dict(doc: Obj, *, base_dir: Path | None = None, context: str | None = None) -> ClientConfig:
    """A `ClientConfig` from one already-parsed kubeconfig document."""
    return config_from_dicts([((base_dir or Path.cwd()) / "kubeconfig", doc)], context=context)


def config_from_dicts(docs: list[tuple[Path, Obj]], *, context: str | None = None) -> ClientConfig:
    """Merge kubeconfig documents (first wins for each named entry) and resolve one context."""
    clusters: dict[str, tuple[Path, Obj]] = {}
    users: dict[str, tuple[Path, Obj]] = {}
    contexts: dict[str, Obj] = {}
    current = ""
    for path, doc in docs:
        for kind, into in (("clusters", clusters), ("users", users)):
            for entry in doc.get(kind) or []:
                name = entry.get("name", "")
                into.setdefault(name, (path.parent, entry.get(kind[:-1]) or {}))
        for entry in doc.get("contexts") or []:
            contexts.setdefault(entry.get("name", ""), entry.get("context") or {})
        current = current or doc.get("current-context") or ""
    name = context or current
    if not name:
        raise KubeconfigError("the kubeconfig has no current-context and none was asked for")
    if name not in contexts:
        raise KubeconfigError(f'context "{name}" not found in the kubeconfig')
    ctx = contexts[name]
    cluster_name, user_name = ctx.get("cluster", ""), ctx.get("user", "")
    if cluster_name not in clusters:
        raise KubeconfigError(f'cluster "{cluster_name}" of context "{name}" not found in the kubeconfig')
    cluster_dir, cluster = clusters[cluster_name]
    user_dir, user = users.get(user_name, (cluster_dir, {}))
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise KubeconfigError(f'cluster "{cluster_name}" has no server')
    token = user.get("token") or None
    if token is None and user.get("tokenFile"):
        token = _resolve(user_dir, user["tokenFile"]).read_text().strip()
    ssl_context = _ssl_context(cluster_dir, cluster, user_dir, user) if server.startswith("https:") else None
    return ClientConfig(
        server=server,
        ssl_context=ssl_context,
        token=token,
        namespace=ctx.get("namespace") or "default",
        tls_server_name=cluster.get("tls-server-name") or None,
        ca_pem=_pem(cluster_dir, cluster, "certificate-authority") if server.startswith("https:") else None,
    )


def _read(path: Path) -> Obj:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a mapping")
    return doc


def _resolve(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p


def _pem(base: Path, entry: Obj, field: str) -> bytes | None:
    """The PEM bytes of `field` (a file) or `field-data` (base64)."""
    data = entry.get(f"{field}-data")
    if data:
        try:
            return base64.b64decode("".join(str(data).split()), validate=True)
        except ValueError as exc:
            raise KubeconfigError(f"{field}-data is not valid base64") from exc
    name = entry.get(field)
    if name:
        try:
            return _resolve(base, name).read_bytes()
        except OSError as exc:
            raise KubeconfigError(f"cannot read {field} {name}: {exc.strerror or exc}") from exc
    return None


def _ssl_context(cluster_dir: Path, cluster: Obj, user_dir: Path, user: Obj) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ca = _pem(cluster_dir, cluster, "certificate-authority")
        if ca is not None:
            try:
                ctx.load_verify_locations(cadata=ca.decode())
            except (ssl.SSLError, ValueError) as exc:
                raise KubeconfigError(f"the cluster's certificate authority is not a PEM certificate: {exc}") from exc
    cert = _pem(user_dir, user, "client-certificate")
    key = _pem(user_dir, user, "client-key")
    if (cert is None) != (key is None):
        raise KubeconfigError("the user has a client certificate without a key, or a key without a certificate")
    if cert is not None and key is not None:
        _load_cert_chain(ctx, cert, key)
    return ctx


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`load_cert_chain` only takes files: write the PEMs to a private temporary dir, then remove them."""
    with tempfile.TemporaryDirectory(prefix="skiff-kubeconfig-") as tmp:
        cert_path, key_path = Path(tmp) / "client.crt", Path(tmp) / "client.key"
        for p, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            ctx.load_cert_chain(str(cert_path), str(key_path))
        except ssl.SSLError as exc:
            raise KubeconfigError(f"the client certificate and key do not load: {exc}") from exc
