"""retain_freed_memory: a training step's freed memory is reused, not page-faulted back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from initlab.utils import retain_freed_memory
from tests.helpers import ROOT

# A round makes tensors of five sizes (2-16 MB, every page written) and frees them, as a step
# does with its activations; in a fresh process, prints the minor page faults of ten rounds
# after a first one.
CHURN = """
import resource, sys, torch
from initlab.utils import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def churn():
    blocks = [torch.ones(n) for n in (1_000_000, 2_000_000, 3_000_000, 500_000, 4_000_000)]
    del blocks
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1])


ROUND_PAGES = 10_500_000 * 4 // 4096  # the pages one round writes


@pytest.mark.slow  # two fresh interpreters importing torch
def test_retained_memory_is_reused_without_page_faults():
    """Retained, ten rounds take at most one round's pages in faults (they reuse the first
    round's memory); with glibc's defaults the blocks go back to the OS and come back as
    faults (here 14k-93k over the ten rounds, by the heap's history: always more than one
    round's pages). The setting is process-wide, so each mode runs in a process of its own."""
    if not retain_freed_memory():
        pytest.skip("the C library here has no glibc mallopt: nothing to retain")
    retained, default = _faults("retain"), _faults("default")
    assert retained <= ROUND_PAGES < default
