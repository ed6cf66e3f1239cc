"""The error every data problem is reported with, and the one message for a full disk."""

import errno
import os
import shutil


class DataError(Exception):
    """A problem with the user's data or data config, explained in one or two sentences.

    The message says what is wrong, which file, and what to do about it; the CLI prints it without a
    traceback.
    """


def is_no_space(error: BaseException) -> bool:
    """Whether a failed write failed because the disk (or the user's quota) is full."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def human_bytes(n: float) -> str:
    """A byte count for people: 512 B, 1.2 MB, 3.4 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def free_bytes(directory: os.PathLike | str) -> int | None:
    """The free space on the disk holding ``directory``, None where it cannot be told."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def no_space_error(directory: os.PathLike | str, what: str, remedy: str) -> DataError:
    """The one message for a full disk: where, how much is free, ``what`` could not be written (and how much it
    needs, if the caller knows), and ``remedy``, the setting that puts it on a larger disk."""
    free = free_bytes(directory)
    have = f"{human_bytes(free)} free" if free is not None else "free space unknown"
    return DataError(f"no space left on the disk holding {directory} ({have}): {what}. Free some space, or "
                     f"{remedy}.")
