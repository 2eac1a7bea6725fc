"""How a host that cannot be reached is reported (``controller/launch/hosts.py``): what ssh
said, whichever way execnet noticed that ssh had gone."""

from __future__ import annotations

import pytest
from execnet.gateway_bootstrap import HostNotFound

from pytest_reuse_env.controller.launch.hosts import unreachable

SSH = " (ssh: ssh: connect to host 127.0.0.1 port 9: Connection refused)"


@pytest.mark.parametrize(
    "error",
    [HostNotFound("-p 9 root@127.0.0.1"), BrokenPipeError(32, "Broken pipe"), EOFError("eof")],
)
def test_ssh_gone_is_told_by_what_ssh_said(error: BaseException) -> None:
    assert unreachable("reach", error, SSH) == f"could not reach it{SSH}"


def test_other_errors_and_a_silent_ssh_keep_the_exception() -> None:
    assert unreachable("reach", BrokenPipeError(32, "Broken pipe"), "") == (
        "could not reach it: BrokenPipeError: [Errno 32] Broken pipe"
    )
    assert unreachable("send the project to", ValueError("bad"), SSH) == (
        f"could not send the project to it: ValueError: bad{SSH}"
    )
