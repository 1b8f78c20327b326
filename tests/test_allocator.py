"""The app's allocator settings: free memory left in a worker thread's malloc arena goes back to the system."""

import ctypes
import sys
import threading

import psutil
import pytest

from ppgn_core.allocator import configure_for_serving, release_free_memory, releasing_memory

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


def _fragment_in_thread(libc, blocks: int = 1600, size: int = 64 * 1024) -> list[int]:
    """Allocate and touch ``blocks`` blocks of ``size`` bytes in a worker thread, each followed by a small block that
    stays alive, then free the big ones: the freed memory sits between live blocks in the thread's arena."""
    keep: list[int] = []

    def work():
        big = []
        for _ in range(blocks):
            p = libc.malloc(size)
            ctypes.memset(p, 1, size)
            big.append(p)
            keep.append(libc.malloc(64))
        for p in big:
            libc.free(p)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return keep


@glibc
def test_released_memory_leaves_the_process():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    me = psutil.Process()
    release_free_memory()
    before = me.memory_info().rss
    keep = _fragment_in_thread(libc)
    held = me.memory_info().rss
    assert held - before > 60 * 2 ** 20  # the freed 100 MB are still held by the arena
    assert release_free_memory()
    after = me.memory_info().rss
    assert held - after > 60 * 2 ** 20, (before, held, after)
    for p in keep:
        libc.free(p)


@glibc
def test_a_stream_releases_memory_when_abandoned(monkeypatch):
    calls = []
    monkeypatch.setattr("ppgn_core.allocator.release_free_memory", lambda: calls.append(1) or True)

    @releasing_memory
    def stream():
        yield 1
        yield 2

    it = stream()
    assert next(it) == 1 and calls == []
    it.close()  # a client went away mid-stream
    assert calls == [1]
    assert list(stream()) == [1, 2] and calls == [1, 1]
    assert configure_for_serving(4)
    with pytest.raises(ValueError, match="arena"):
        configure_for_serving(0)
