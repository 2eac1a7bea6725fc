"""Everything that runs inside a replica (the replica side).

Nothing here imports :mod:`pytest_reuse_env.controller`; it needs only the standard library,
pytest, psutil and the shared, pytest-free modules at the package's top (it may one day be
shipped to an interpreter on another host).
"""
