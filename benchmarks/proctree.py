"""Measure one child process and all its descendants: wall time, CPU time, peak RSS of the tree.

Ray starts daemons below the driver (gcs_server, raylet, workers) and some may outlive it. The
measuring process makes itself a child subreaper (Linux), so orphans are re-parented to it rather
than to init: they stay in the tree, are sampled, and once reaped count in ``RUSAGE_CHILDREN``.
Whatever still runs a grace period after the child exits is terminated, then killed.

CPU time is taken two ways and the larger is reported: sampling (misses at most the last interval
of each process) and ``RUSAGE_CHILDREN`` (misses processes nobody waits for: Ray's raylet does not
account its workers, so on a Ray run it reads about half the sampled figure).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

__all__ = ["TreeUsage", "become_subreaper", "measure"]

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


@dataclass(frozen=True)
class TreeUsage:
    returncode: int | None  # None: killed at the time limit
    wall_s: float  # child start to child exit
    cpu_s: float  # user + system over the whole tree: the larger of the two below
    cpu_sampled_s: float  # the last CPU time seen of every process sampled in the tree
    cpu_rusage_s: float  # the RUSAGE_CHILDREN delta: every descendant reaped in the tree
    peak_rss_bytes: int  # max over samples of the summed RSS of every process in the tree
    killed: tuple[str, ...]  # names of descendants still running ``grace_s`` after the child exited
    over_memory: bool = False  # stopped because the tree passed ``max_rss_bytes``


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux ≥ 3.4); return whether that worked."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


class _Sampler:
    """The tree is every descendant of this process plus any process seen in it before.

    CPU time is kept per process as the last value seen, so processes that exit still count.
    """

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._seen: dict[tuple[int, float], psutil.Process] = {}
        self._cpu_s: dict[tuple[int, float], float] = {}
        self.peak_rss_bytes = 0

    def tree(self) -> list[psutil.Process]:
        procs = {p.pid: p for p in self._seen.values()}
        with contextlib.suppress(psutil.Error):
            procs.update({p.pid: p for p in self._me.children(recursive=True)})
        live = []
        for proc in procs.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    live.append(proc)
        return live

    def sample(self) -> int:
        """Record one sample; return how many processes are alive in the tree."""
        rss, live = 0, self.tree()
        for proc in live:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
            self._seen[key] = proc
            self._cpu_s[key] = times.user + times.system
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        return len(live)

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu_s.values())


def _reap_adopted() -> None:
    """Collect exited orphans re-parented to us, so their CPU time enters RUSAGE_CHILDREN."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return f"pid {proc.pid}"


def _end_tree(sampler: _Sampler, grace_s: float, interval_s: float) -> tuple[str, ...]:
    """Let the tree wind down for ``grace_s``, then end what is left; return their names."""
    deadline = time.perf_counter() + grace_s
    while True:
        _reap_adopted()
        if sampler.sample() == 0 or time.perf_counter() >= deadline:
            break
        time.sleep(interval_s)
    left = sampler.tree()
    names = tuple(sorted(_name(p) for p in left))
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=3.0)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=3.0)
    _reap_adopted()
    return names


def _rusage_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    cmd: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdout: IO[bytes],
    stderr: IO[bytes],
    timeout_s: float,
    interval_s: float = 0.1,
    grace_s: float = 3.0,
    max_rss_bytes: int | None = None,
) -> TreeUsage:
    """Run ``cmd`` to completion (or ``timeout_s``) and measure its whole process tree.

    ``max_rss_bytes``: stop the child (returncode None, ``over_memory``) once the tree holds more,
    so a runner that cannot cope with a workload does not take the machine down with it.
    Call ``become_subreaper`` once first; run one ``measure`` at a time (it reaps any child).
    """
    sampler, stop, over = _Sampler(), threading.Event(), threading.Event()

    def poll() -> None:
        while not stop.wait(interval_s):
            sampler.sample()
            if max_rss_bytes is not None and sampler.peak_rss_bytes > max_rss_bytes:
                over.set()
                child.kill()
                return

    _reap_adopted()  # a late orphan of an earlier run must not count in this one
    before = _rusage_cpu_s()
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=stdout, stderr=stderr)
    sampler.sample()
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    returncode: int | None
    try:
        returncode = child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        returncode = None
    if over.is_set():
        returncode = None
    wall_s = time.perf_counter() - start
    stop.set()
    thread.join()
    killed = _end_tree(sampler, grace_s if returncode is not None else 0.0, interval_s)
    sampled, reaped = sampler.cpu_s, _rusage_cpu_s() - before
    return TreeUsage(
        returncode,
        wall_s,
        max(sampled, reaped),
        sampled,
        reaped,
        sampler.peak_rss_bytes,
        killed,
        over.is_set(),
    )
