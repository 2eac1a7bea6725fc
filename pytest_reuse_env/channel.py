"""A channel over a Unix-domain socket, shaped like execnet's (send, receive, setcallback).

Detached replicas (``scope="global"``) outlive the pytest run that started them, which an
execnet popen gateway cannot; they listen on a Unix socket instead and keep execnet's
serializer for the messages. Frames are a 4-byte big-endian length then ``execnet.dumps`` of
the message.

Who may connect: the socket sits in a 0700 directory and is itself 0600; the server checks the
peer's uid (``SO_PEERCRED``) and the first frame must be the registry's secret token (a 0600
file), compared in constant time. Anything else is refused and the connection closed.
"""

from __future__ import annotations

import hmac
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, Final, final

import execnet

_LENGTH: Final = struct.Struct("!I")
#: Frames larger than this are a protocol error, not a report (a report is kilobytes).
MAX_FRAME: Final = 64 * 1024 * 1024
AUTH_OK: Final = "auth_ok"
AUTH_REFUSED: Final = "auth_refused"


class ChannelClosed(OSError):
    """The other side went away."""


@final
class SocketChannel:
    """One connection. ``setcallback`` starts a reader thread; callbacks only enqueue."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._closed = False
        self._reader: threading.Thread | None = None

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        data = execnet.dumps(message)
        with self._send_lock:
            if self._closed:
                raise ChannelClosed("channel is closed")
            try:
                self._sock.sendall(_LENGTH.pack(len(data)) + data)
            except OSError as exc:
                self._closed = True
                raise ChannelClosed(str(exc)) from exc

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> Any:
        """One message, waiting at most ``timeout`` seconds (socket.timeout past it)."""
        self._sock.settimeout(timeout)
        try:
            header = self._read_exactly(_LENGTH.size)
            (length,) = _LENGTH.unpack(header)
            if length > MAX_FRAME:
                raise ChannelClosed(f"frame of {length} bytes exceeds {MAX_FRAME}")
            return execnet.loads(self._read_exactly(length))
        finally:
            if not self._closed:
                self._sock.settimeout(None)

    def _read_exactly(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self._sock.recv(min(size, 1 << 20))
            if not chunk:
                self._closed = True
                raise ChannelClosed("connection closed by peer")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def setcallback(self, callback: Callable[[Any], None], endmarker: Any) -> None:
        """Deliver every further message to ``callback`` from a reader thread, then
        ``endmarker`` once the connection ends."""

        def read() -> None:
            try:
                while True:
                    callback(self.receive())
            except Exception:  # a broken or malformed stream ends the connection
                pass
            finally:
                self.close()
                callback(endmarker)

        self._reader = threading.Thread(target=read, name="reuse-channel-reader", daemon=True)
        self._reader.start()

    # -- state -------------------------------------------------------------------------------

    def isclosed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (Linux SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def connect(path: str, token: str, timeout: float) -> SocketChannel:
    """Connect and authenticate; ``ChannelClosed`` if refused, ``OSError`` if nobody listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    channel = SocketChannel(sock)
    channel.send(token)
    answer = channel.receive(timeout=timeout)
    if answer != AUTH_OK:
        channel.close()
        raise ChannelClosed(f"replica at {path} refused the connection: {answer}")
    return channel


@final
class Listener:
    """The server side: a 0600 Unix socket that admits the owner's uid with the token only."""

    def __init__(self, path: str, token: str) -> None:
        self.path = path
        self._token = token
        if os.path.exists(path):
            os.unlink(path)  # a dead replica's leftover; the registry owns the name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is created 0600, with no window of 0666
        try:
            self._sock.bind(path)
        finally:
            os.umask(old_umask)
        self._sock.listen(8)

    def accept(self, timeout: float | None) -> SocketChannel | None:
        """The next authenticated connection, or None when ``timeout`` passes first or the
        caller refused it (wrong uid or token)."""
        self._sock.settimeout(timeout)
        try:
            sock, _ = self._sock.accept()
        except (TimeoutError, OSError):
            return None
        channel = SocketChannel(sock)
        try:
            if peer_uid(sock) != os.getuid():
                channel.send(AUTH_REFUSED)
                channel.close()
                return None
            token = channel.receive(timeout=5.0)
            if not isinstance(token, str) or not hmac.compare_digest(token, self._token):
                channel.send(AUTH_REFUSED)
                channel.close()
                return None
            channel.send(AUTH_OK)
        except Exception:  # garbage from a stranger (execnet's DataFormatError, ...): drop it
            channel.close()
            return None
        return channel

    def close(self) -> None:
        self._sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
