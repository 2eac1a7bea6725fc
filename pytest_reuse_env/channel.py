"""A channel over a Unix-domain socket, shaped like execnet's (send, receive, setcallback).

Detached replicas (``scope="global"``) outlive the pytest run that started them, which an
execnet popen gateway cannot; they listen on a Unix socket instead and keep execnet's
serializer for the messages. Frames are a 4-byte big-endian length then ``execnet.dumps`` of
the message.

Who may connect: the socket sits in a 0700 directory and is itself 0600; the server checks the
peer's uid (``SO_PEERCRED``) and the first frame must be the registry's secret token (a 0600
file), compared in constant time. Anything else is refused, the connection closed and the
refusal logged once. A connection that has not authenticated is never waited on: the listener
polls every pending one at once, gives each ``AUTH_DEADLINE_SECONDS``, and holds at most
``MAX_PENDING`` (the oldest is refused to make room), so idle strangers cannot keep a real client
out. The client checks the server's uid too before it sends the token.
"""

from __future__ import annotations

import hmac
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, final

import execnet

_LENGTH: Final = struct.Struct("!I")
#: Frames larger than this are a protocol error, not a report (a report is kilobytes).
MAX_FRAME: Final = 64 * 1024 * 1024
AUTH_OK: Final = "auth_ok"
AUTH_REFUSED: Final = "auth_refused"
#: How long a new connection may take to send its token: a real client sends it at once.
AUTH_DEADLINE_SECONDS: Final = 2.0
#: Connections authenticating at once; a new one past this refuses the oldest.
MAX_PENDING: Final = 16
#: Largest first frame: a token frame is under a hundred bytes.
MAX_AUTH_FRAME: Final = 1024


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

    def fileno(self) -> int:
        return self._sock.fileno()

    def isclosed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end of a Unix socket (Linux SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return int(pid), int(uid)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (Linux SO_PEERCRED)."""
    return peer_credentials(sock)[1]


def connect(path: str, token: str, timeout: float) -> SocketChannel:
    """Connect and authenticate; ``ChannelClosed`` if refused, ``OSError`` if nobody listens.

    The socket is closed on every failure: a caller that gets an exception holds nothing."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        server_uid = peer_uid(sock)
        if server_uid != os.getuid():
            # The token is our secret: never hand it to another user's listener.
            raise ChannelClosed(f"{path} is served by uid {server_uid}, not by you")
        channel = SocketChannel(sock)
        channel.send(token)
        answer = channel.receive(timeout=timeout)
    except BaseException:
        sock.close()
        raise
    if answer != AUTH_OK:
        channel.close()
        raise ChannelClosed(f"replica at {path} refused the connection: {answer}")
    return channel


@dataclass
class _Pending:
    """A connection that has not authenticated yet."""

    deadline: float
    pid: int
    uid: int
    received: bytearray = field(default_factory=bytearray)


@final
class Listener:
    """The server side: a 0600 Unix socket that admits the owner's uid with the token only.

    ``log`` is told each refusal, once, in a line."""

    def __init__(
        self,
        path: str,
        token: str,
        *,
        log: Callable[[str], None] | None = None,
        auth_deadline: float = AUTH_DEADLINE_SECONDS,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._token = token
        self._log = log or (lambda line: None)
        self._auth_deadline = auth_deadline
        self._max_pending = max_pending
        self._clock = clock
        #: Connections refused so far.
        self.refused = 0
        if os.path.exists(path):
            os.unlink(path)  # a dead replica's leftover; the registry owns the name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is created 0600, with no window of 0666
        try:
            self._sock.bind(path)
        finally:
            os.umask(old_umask)
        self._sock.listen(64)
        self._sock.setblocking(False)
        # poll, not epoll: it holds no file descriptor (a replica's leak check counts them).
        self._poll = select.poll()
        self._poll.register(self._sock, select.POLLIN)
        #: By file descriptor, oldest first.
        self._pending: dict[int, tuple[socket.socket, _Pending]] = {}

    @property
    def pending(self) -> int:
        """Connections waiting to authenticate."""
        return len(self._pending)

    def descriptors(self) -> list[int]:
        """Its own socket's descriptor and those of connections still authenticating."""
        return [self._sock.fileno(), *self._pending]

    def accept(self, timeout: float | None) -> SocketChannel | None:
        """The next authenticated connection, or None when ``timeout`` passes first.

        Strangers (wrong uid, wrong or no token in time, garbage) are refused along the way."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            now = self._clock()
            self._expire(now)
            waits = [p.deadline - now for _, p in self._pending.values()]
            if deadline is not None:
                waits.append(deadline - now)
            wait = max(0.0, min(waits)) if waits else None
            try:
                ready = self._poll.poll(None if wait is None else wait * 1000.0)
            except OSError:
                return None  # closed under us
            for fd, _events in ready:
                if fd == self._sock.fileno():
                    self._accept_new()
                    continue
                channel = self._read_token(fd)
                if channel is not None:
                    return channel
            if deadline is not None and self._clock() >= deadline:
                self._expire(self._clock())
                return None

    def _accept_new(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            try:
                pid, uid = peer_credentials(sock)
            except OSError:
                sock.close()
                continue
            pending = _Pending(self._clock() + self._auth_deadline, pid, uid)
            if uid != os.getuid():
                self._refuse(sock, pending, f"uid {uid} is not the owner's")
                continue
            if len(self._pending) >= self._max_pending:
                oldest = next(iter(self._pending))
                self._refuse_pending(
                    oldest, f"over {self._max_pending} connections waiting to authenticate"
                )
            self._pending[sock.fileno()] = (sock, pending)
            self._poll.register(sock, select.POLLIN)

    def _read_token(self, fd: int) -> SocketChannel | None:
        entry = self._pending.get(fd)
        if entry is None:
            return None
        sock, pending = entry
        try:
            chunk = sock.recv(MAX_AUTH_FRAME + _LENGTH.size + 1)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as error:
            self._refuse_pending(fd, f"connection failed before authenticating ({error})")
            return None
        if not chunk:
            self._refuse_pending(fd, "closed without authenticating")
            return None
        pending.received += chunk
        if len(pending.received) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(pending.received)
        if length > MAX_AUTH_FRAME:
            self._refuse_pending(fd, f"first frame of {length} bytes is not a token")
            return None
        if len(pending.received) < _LENGTH.size + length:
            return None
        if len(pending.received) > _LENGTH.size + length:
            self._refuse_pending(fd, "sent more before being admitted")
            return None
        try:
            token = execnet.loads(bytes(pending.received[_LENGTH.size :]))
        except Exception:  # garbage from a stranger (execnet's DataFormatError, ...)
            self._refuse_pending(fd, "first frame is not a token")
            return None
        if not isinstance(token, str) or not hmac.compare_digest(token, self._token):
            self._refuse_pending(fd, "wrong token")
            return None
        self._forget(fd)
        sock.setblocking(True)
        channel = SocketChannel(sock)
        try:
            channel.send(AUTH_OK)
        except ChannelClosed:
            channel.close()
            return None
        return channel

    def _expire(self, now: float) -> None:
        for fd, (_sock, pending) in list(self._pending.items()):
            if now >= pending.deadline:
                self._refuse_pending(fd, f"no token within {self._auth_deadline:g} s of connecting")

    def _forget(self, fd: int) -> tuple[socket.socket, _Pending]:
        entry = self._pending.pop(fd)
        try:
            self._poll.unregister(fd)
        except (KeyError, ValueError):
            pass
        return entry

    def _refuse_pending(self, fd: int, reason: str) -> None:
        sock, pending = self._forget(fd)
        self._refuse(sock, pending, reason)

    def _refuse(self, sock: socket.socket, pending: _Pending, reason: str) -> None:
        self.refused += 1
        try:
            data = execnet.dumps(AUTH_REFUSED)
            sock.send(_LENGTH.pack(len(data)) + data)  # best effort: never wait on a stranger
        except OSError:
            pass
        sock.close()
        self._log(f"refused a connection from pid {pending.pid} (uid {pending.uid}): {reason}")

    def close(self) -> None:
        for fd in list(self._pending):
            sock, _ = self._forget(fd)
            sock.close()
        self._sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
