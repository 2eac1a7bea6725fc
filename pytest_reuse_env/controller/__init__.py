"""Everything that runs in the pytest process the user started (the controller side).

Imported by :mod:`pytest_reuse_env.plugin` only once a test is routed to reuse (or a
``--reuse-*`` command runs); a run that routes nothing never loads this package.
"""
