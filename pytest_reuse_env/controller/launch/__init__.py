"""How a replica is started and reached: one strategy a module, each with its link and its
bootstrap, behind the interface in ``base.py``.

- ``popen.py``: ``scope="run"``, an execnet popen gateway of this process.
- ``daemon.py``: ``scope="global"``, a detached replica reached over a Unix socket, leased warm
  from the project's registry or started within ``max``.
- ``hosts.py``: a replica on a configured host (``reuse_hosts``), run-scoped.
- ``process.py``: ending a process by pid, bounded ("ask, wait, kill").

A new strategy is one module here plus the replica side's entry point (``replica/``); the
launcher (``controller/launcher.py``) picks among them.
"""
