"""The API server's local listener for its own child processes: a private Unix socket and per-start tokens.

Why this exists: `skiff server` runs the controller manager, the scheduler,
cluster DNS and the function gateway as child processes on its own machine.
Talking HTTPS to the server on loopback, every binding, event and status
write, and every watch event they receive, is encrypted by one process and
decrypted by the other -- on a machine where the API server's core sets the
pace of scheduling. Kubernetes' answer for the API server's in-process clients
is a loopback connection with a token minted at each start and never written
down; skiff's children are processes, so they get:

* a Unix socket, `<data dir>/apiserver.sock`, mode 0600 (only the user running
  the server, i.e. root, can connect), served by the same application as the
  HTTPS port, without TLS;
* a bearer token per child, random at each start, that authenticates as the
  identity the child has over HTTPS (the admin kubeconfig's `system:admin` in
  `system:masters`), so authentication and authorization stay what they were.
  It travels in the child's environment (readable by the same user only) and
  the child removes it from there (`skiff.client.local`).

Where the socket cannot be made (a data dir path longer than a socket address
allows, a filesystem without sockets), the children keep using HTTPS.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from skiff.apiserver.auth import UserInfo, with_authenticated_group
from skiff.client.local import SOCKET_ENV, TOKEN_ENV

log = logging.getLogger(__name__)

SOCKET_NAME = "apiserver.sock"


class LocalAccess:
    """The socket and the tokens of one server start; a token authenticator for `auth.Authenticator`."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / SOCKET_NAME
        self._users: dict[str, UserInfo] = {}  # token -> who it authenticates
        self._site: web.BaseSite | None = None

    @property
    def listening(self) -> bool:
        return self._site is not None

    def issue(self, user: UserInfo) -> str:
        """A new token for `user`, valid until the server stops."""
        token = secrets.token_urlsafe(32)
        self._users[token] = with_authenticated_group(user)
        return token

    def child_env(self, user: UserInfo) -> dict[str, str]:
        """What a child's environment needs to reach this server as `user` over the socket (nothing when
        the socket is not there: the child then uses its kubeconfig)."""
        if not self.listening:
            return {}
        return {SOCKET_ENV: str(self.path), TOKEN_ENV: self.issue(user)}

    async def authenticate_token(self, token: str) -> UserInfo | None:
        for known, user in self._users.items():
            if hmac.compare_digest(known, token):
                return user
        return None

    async def listen(
        self, runner: web.AppRunner, site: Callable[[socket.socket], web.BaseSite] | None = None
    ) -> None:
        """Serve `runner`'s application on the socket (through `site(sock)` when given, e.g. a
        `leanhttp.LeanSockSite`); on failure, log why and carry on without it."""
        try:
            sock = _bind_private(self.path)
        except OSError as e:
            log.warning("no local socket at %s (%s): the server's children use HTTPS", self.path, e.strerror or e)
            return
        listener = site(sock) if site is not None else web.SockSite(runner, sock)
        await listener.start()
        self._site = listener
        log.info("local socket for the server's own components: %s", self.path)

    def remove(self) -> None:
        """Remove the socket file (the runner's cleanup closes the listener)."""
        if self._site is not None:
            self._site = None
            with contextlib.suppress(OSError):
                self.path.unlink()


def _bind_private(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, created with mode 0600 (never reachable by others, not even briefly)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # left by a server that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)  # Linux: the socket file takes this mode when it is bound
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
