"""The interface of a launch strategy and of the link it makes.

A *strategy* (``popen.py``, ``daemon.py``, ``hosts.py``) decides where a new replica runs,
starts its process with its own bootstrap, and hands back the controller's ``Replica`` handle,
made by the launcher (``Starter``: ids, the start payload, attaching). A *link* is how the
handle reaches the process: it delivers every message it receives to ``deliver`` on a reader
thread (execnet's receiver thread or the socket's), which only enqueues; ``deliver(END)``
follows when the link closes. Every wait is bounded; ending a process is "ask, wait, kill", by
pid (``process.py``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, final

from pytest_reuse_env import protocol
from pytest_reuse_env.policy import ReusePolicy

if TYPE_CHECKING:
    from pytest_reuse_env.controller.replica import Replica

#: Delivered after the last message of a link, whatever ended it (defined by the protocol).
END: Final = protocol.END
#: What ``exit_description`` says of a process that has not exited: its connection was lost.
STILL_RUNNING: Final = "still running"

Deliver = Callable[[Any], None]


class Link(Protocol):
    """How the controller reaches one replica process."""

    pid: int | None
    #: It is a spare started before the run knew it needed it (spare.py).
    from_spare: bool

    def open(self, first: protocol.Message, deliver: Deliver) -> None:
        """Start (or connect to) the process and send ``first``; returns at once."""

    def send(self, message: protocol.Message) -> bool:
        """False when the link is already gone (``END`` follows)."""

    def exit_description(self, wait: float) -> str:
        """How the process ended ("exit code 3"), waiting at most ``wait`` seconds;
        ``STILL_RUNNING`` when it has not."""

    def kill(self) -> None:
        """SIGKILL the process now."""

    def let_exit(self) -> None:
        """Ask it to exit once its session has ended, without waiting (``terminate`` later
        waits and kills): a run-scoped replica that served everything."""

    def terminate(self, wait: float) -> None:
        """Ask it to exit, wait up to ``wait`` seconds, then kill it."""

    def release(self) -> None:
        """End of the run: disconnect (a detached replica stays warm) or terminate."""


class Starter(Protocol):
    """What the launcher does for every strategy."""

    def local_number(self) -> int:
        """The next number of a replica of this run (``r0``, ``r1@host``): execnet gateway ids
        must be unique within the run's group."""

    def start(
        self,
        replica_id: str,
        name: str,
        link: Link,
        policy: ReusePolicy,
        *,
        log_path: str,
        basetemp: str | None,
        persistent: bool = False,
        host: protocol.HostPayload | None = None,
        events: queue.SimpleQueue[Any] | None = None,
        by_file: bool = False,
    ) -> Replica:
        """A handle for a new replica, sent START (``basetemp`` None: the replica makes its
        own where plain pytest would; ``by_file``: it collects only its environment's test
        files, ``launch/collect.py``)."""

    def attach(self, replica_id: str, name: str, link: Link, log_path: str) -> Replica:
        """A handle for a warm replica, sent ATTACH."""


class Strategy(Protocol):
    """One way to start a replica."""

    def launch(self, name: str, policy: ReusePolicy, key: str | None) -> Replica | None:
        """A replica for the environment, or None when none may start now (``max`` reached,
        every host full)."""


@final
class Outbox:
    """Messages for a link that is still connecting (on a thread): held until it is, then sent
    in order; after that, sent at once. False from ``send`` means the link is gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.channel: Any = None
        self._held: list[protocol.Message] = []

    def connected(self, channel: Any) -> None:
        with self._lock:
            try:
                for message in self._held:
                    channel.send(message)
            except (OSError, EOFError, ValueError):
                pass  # the channel's end marker follows
            self._held = []
            self.channel = channel

    def send(self, message: protocol.Message) -> bool:
        with self._lock:
            channel = self.channel
            if channel is None:
                self._held.append(message)
                return True
        if channel.isclosed():
            return False
        try:
            channel.send(message)
        except (OSError, EOFError, ValueError):
            return False
        return True
