"""The registry's files on disk: private directories and files, and what a file-system error
means for the user (the path, the problem, the fix).

Every directory the plugin creates is 0700, whoever creates it; one of the user's own that is
merely readable by others is tightened; one that others may write to, or owned by someone
else, is refused. A cache directory the plugin is the first to need (``.pytest_cache``) gets
the files pytest puts in its own, which pytest adds only to a directory it creates: git
ignores it, backup tools know it for a cache. This module does not import pytest and imports
nothing from the package.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Final

#: What pytest writes into a cache directory it creates (_pytest/cacheprovider.py).
CACHE_DIRECTORY_FILES: Final = {
    ".gitignore": b"# Created by pytest automatically.\n*\n",
    "CACHEDIR.TAG": b"""Signature: 8a477f597d28d172789f06886806bc55
# This file is a cache directory tag created by pytest.
# For information about cache directory tags, see:
#\thttps://bford.info/cachedir/spec.html
""",
    "README.md": b"""# pytest cache directory #

This directory contains data from the pytest's cache plugin,
which provides the `--lf` and `--ff` options, as well as the `cache` fixture.

**Do not** commit this to version control.

See [the docs](https://docs.pytest.org/en/stable/how-to/cache.html) for more information.
""",
}


class RegistryError(Exception):
    """The registry cannot be used: the message names the path, the problem and the fix."""


class RegistryBusy(RegistryError):
    """The registry's lock stayed busy past the bounded wait: try again later, or run without."""


def fix_for(path: Path | str, error: OSError) -> str:
    """What the user can do about ``error`` on ``path``, in a few words."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space on that file system"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            "make it writable, or point cache_dir at a writable directory "
            "(pytest -o cache_dir=/some/writable/dir)"
        )
    if error.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ELOOP):
        return f"remove {path} (the registry re-creates what it needs)"
    return f"check {path}, or remove the registry directory to start afresh"


def registry_error(error: OSError, action: str) -> RegistryError:
    """A RegistryError for an OSError met outside this module (the replica's log file, ...):
    the path, the problem and the fix."""
    return os_error(error.filename or "?", action, error)


def os_error(path: Path | str, action: str, error: OSError) -> RegistryError:
    reason = os.strerror(error.errno) if error.errno is not None else str(error)
    return RegistryError(f"cannot {action} {path}: {reason}; fix: {fix_for(path, error)}")


def private_directory(path: Path, *, create: bool = True) -> None:
    """Create ``path`` with mode 0700, or check that the existing one is 0700 and ours.

    With ``create=False`` a missing directory is a RegistryError: it was removed on purpose.
    """
    try:
        if create:
            try:
                os.mkdir(path, mode=0o700)
            except FileExistsError:
                pass
            except FileNotFoundError:
                # Parents (the cache directory) as pytest makes them; the registry's own 0700.
                make_cache_directory(path.parent)
                try:
                    os.mkdir(path, mode=0o700)
                except FileExistsError:
                    pass  # a run started at the same moment made it first
        info = os.lstat(path)
    except FileNotFoundError:
        raise RegistryError(
            f"the registry directory {path} was removed; fix: nothing, the next run creates it"
        ) from None
    except OSError as error:
        raise os_error(path, "create the registry directory", error) from None
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
        mode = stat.S_IMODE(info.st_mode)
        # Ours and only readable by others (mkdir honours the umask): tighten it. Writable by
        # others means something may have been planted: refused below.
        if mode != 0o700 and not mode & 0o022:
            try:
                os.chmod(path, 0o700)
                info = os.lstat(path)
            except OSError as error:
                raise os_error(path, "make private (chmod 700)", error) from None
    check_private(path, info, 0o700, "directory")


def make_cache_directory(path: Path) -> None:
    """Create the cache directory with pytest's files in it (nothing when it exists)."""
    try:
        os.makedirs(path)
    except FileExistsError:
        return
    for name, content in CACHE_DIRECTORY_FILES.items():
        try:
            with open(path / name, "xb") as file:
                file.write(content)
        except OSError:
            continue  # pytest's own, written meanwhile, or a disk that refuses: only a nicety


def check_private(path: Path, info: os.stat_result, mode: int, kind: str) -> None:
    expected = stat.S_ISDIR if kind == "directory" else stat.S_ISREG
    if stat.S_ISLNK(info.st_mode) or not expected(info.st_mode):
        raise RegistryError(
            f"refusing to use {path}: it is not a {kind} (or is a symlink); fix: remove it"
        )
    if info.st_uid != os.geteuid():
        raise RegistryError(
            f"refusing to use {path}: it is owned by uid {info.st_uid}, not by you "
            f"(uid {os.geteuid()}); fix: remove it (as its owner or root)"
        )
    actual = stat.S_IMODE(info.st_mode)
    if actual & 0o077:
        raise RegistryError(
            f"refusing to use {path}: its mode is {actual:04o}, it must be {mode:04o} "
            f"(no access for group or others); fix with: chmod {mode:o} {path}"
        )
