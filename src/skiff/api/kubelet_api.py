"""What the apiserver and the node agent agree on for the kubelet API (logs, exec, attach, port-forward).

The apiserver calls a node's kubelet endpoint with a client certificate whose subject is
`KUBELET_CLIENT_USER` in group `system:masters` (kube-apiserver's `--kubelet-client-certificate`);
the node agent lets no other identity in. Exec's exit status travels on the error channel as a
Kubernetes Status, which kubectl turns into its own exit code.
"""

from __future__ import annotations

from typing import Any

KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
KUBELET_CLIENT_GROUP = "system:masters"
DEFAULT_KUBELET_PORT = 10250

# remotecommand subprotocols, newest first (kubectl 1.30+ asks for v5 over WebSocket)
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
# port-forward over WebSocket: SPDY/3.1 frames tunnelled in binary messages
PORT_FORWARD_TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
PORT_FORWARD_PROTOCOL = "portforward.k8s.io"

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exec_status(argv: list[str], exit_code: int) -> dict[str, Any]:
    """The Status the error channel carries when a command ends (the kubelet's, as kubectl reads it)."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command [{' '.join(argv)}], "
        f"exit code {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def exec_error(message: str) -> dict[str, Any]:
    """The Status for a command that could not run at all."""
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500}
