"""Reaching the API server through its local socket, for `skiff server`'s own child processes.

Why this exists: the controller manager, the scheduler and the other children
of `skiff server` run on the server's machine and call it for every binding,
event and status write, and watch every pod. Over HTTPS on loopback each
request and each watch event is encrypted by one process and decrypted by the
other, on a machine where the API server's core is the bottleneck. The server
therefore also listens on a Unix socket in its data dir (no TLS) and hands each
child, in its environment, the socket's path and a bearer token minted at
that start for the identity the child would otherwise have from its kubeconfig
(see `skiff.apiserver.local_access`).

`from_environment` turns a kubeconfig's `ClientConfig` into one that uses the
socket when those variables are set, and removes them from this process's
environment so that its own subprocesses do not inherit the token. Everything
else of the kubeconfig (the CA a controller publishes, the namespace) stays.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import MutableMapping

from skiff.client.kubeconfig import ClientConfig

SOCKET_ENV = "SKIFF_LOCAL_API_SOCKET"  # the API server's Unix socket
TOKEN_ENV = "SKIFF_LOCAL_API_TOKEN"  # the bearer token the server minted for this child at its start
LOCAL_SERVER = "http://localhost"  # the URL requests on the socket are sent to (no TLS: the socket is private)


def from_environment(config: ClientConfig, env: MutableMapping[str, str] | None = None) -> ClientConfig:
    """`config` over the local socket when the environment names one (and a token), else `config` itself."""
    env = os.environ if env is None else env
    path, token = env.pop(SOCKET_ENV, ""), env.pop(TOKEN_ENV, "")
    if not path or not token:
        return config
    return dataclasses.replace(config, server=LOCAL_SERVER, ssl_context=None, token=token, unix_socket=path,
                               tls_server_name=None)  # fmt: skip
