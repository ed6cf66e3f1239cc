"""`s2s_attn.fast.allocator.keep_freed_memory`: with glibc, a large block comes from the heap rather than its own
mapping, and stays in the process when freed (each process checked in its own interpreter: the setting is
process-wide)."""

import ctypes
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
    or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc 2.33+ only (mallopt and mallinfo2)")

PROBE = """
import ctypes, sys
import torch
from s2s_attn.fast.allocator import keep_freed_memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # a second call is a no-op that says so
mapped_before = libc.mallinfo2().hblkhd
block = torch.ones(5 * 2**20)  # 20 MiB
mapped = libc.mallinfo2().hblkhd - mapped_before
del block
print(mapped, libc.mallinfo2().fordblks)
"""


def probe(mode: str) -> tuple[int, int]:
    """-> (bytes mapped for the 20 MiB block, free bytes in the heap after freeing it)."""
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, cwd=REPO, check=True)
    mapped, free = done.stdout.split()
    return int(mapped), int(free)


@glibc_only
def test_a_freed_20_mib_block_stays_in_the_heap_for_the_next_step():
    mapped, free = probe("keep")
    assert mapped == 0  # from the heap, not a mapping of its own
    assert free >= 20 * 2**20  # freed, and kept for the next allocation rather than given back


@glibc_only
def test_without_it_glibc_maps_such_a_block_on_its_own():
    mapped, _ = probe("default")
    assert mapped >= 20 * 2**20  # munmapped when freed: its pages are faulted in again next time
