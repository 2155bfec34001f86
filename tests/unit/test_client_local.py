"""skiff.client.local: a child of `skiff server` reaches it through the socket its environment names."""

from __future__ import annotations

from skiff.client.kubeconfig import ClientConfig
from skiff.client.local import SOCKET_ENV, TOKEN_ENV, from_environment


def kubeconfig_config() -> ClientConfig:
    return ClientConfig(server="https://127.0.0.1:6443", ssl_context=None, namespace="ops", ca_pem=b"CA")


def test_socket_and_token_replace_the_transport_and_leave_the_environment() -> None:
    env = {SOCKET_ENV: "/var/lib/skiff/apiserver.sock", TOKEN_ENV: "t0k3n", "PATH": "/bin"}
    config = from_environment(kubeconfig_config(), env)
    assert config.unix_socket == "/var/lib/skiff/apiserver.sock" and config.token == "t0k3n"
    assert config.server == "http://localhost" and config.ssl_context is None
    assert config.ca_pem == b"CA" and config.namespace == "ops"  # the rest of the kubeconfig stays
    assert env == {"PATH": "/bin"}  # the child's own subprocesses do not inherit the token


def test_without_both_the_kubeconfig_is_used_as_it_is() -> None:
    for env in ({}, {SOCKET_ENV: "/x.sock"}, {TOKEN_ENV: "t"}):
        assert from_environment(kubeconfig_config(), dict(env)) == kubeconfig_config()
