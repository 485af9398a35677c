"""Host memory: with the thresholds fixed, memory a step frees is reused by the next step instead of being
returned to the kernel and faulted in again; settings a user made are left alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# Allocate, touch and free a 16 MiB block 20 times (a step's activations), then print the minor page faults
# of the last 19 rounds: the first round faults its pages in whichever way memory is handed out.
PROBE = """
import ctypes, resource, sys
sys.path.insert(0, {src!r})
from train_pytorch_model.host_memory import keep_freed_memory
applied = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 16 << 20
def step():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(19):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run_probe(**environment: str) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    env.update(environment)
    code = PROBE.format(src=str(REPO_ROOT / "src"))
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    applied, faults = output.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_memory_is_reused_without_page_faults():
    applied, faults = run_probe()
    assert applied
    assert faults < 100  # 19 x 4096 pages would be faulted in again without the fix


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_users_allocator_settings_are_kept():
    """A user who set glibc's thresholds gets theirs: here every block is mapped and faulted in again."""
    applied, faults = run_probe(MALLOC_MMAP_THRESHOLD_=str(128 << 10))
    assert not applied
    assert faults > 19 * 4000
