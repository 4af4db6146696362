"""A harness-like process for the CPU tests of the recorder: it loads recorder.c's shared object
against the fake CUPTI/driver (fake_cupti.c; no GPU here), then plays one scenario - honest work
between markers, or what a hostile candidate with ctypes would do - writing records to the
descriptor the test (the judge) passed. Run as:

    python -I scenario.py SANDBOX_DIR FAKE_SO CACHE_DIR INCLUDE_DIRS(os.pathsep) API_VERSION FD SCENARIO
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

BASE = 0x40000000  # marker labels, as a judge would pick them (unlikely values for an honest memset)


def main() -> int:
    sandbox_dir, fake_so, cache_dir, include_dirs, api_version, fd_text, scenario = sys.argv[1:8]
    sys.path.insert(0, sandbox_dir)
    from harness import native  # the harness's own package, as a harness process imports it

    fd = int(fd_text)
    location = native.CuptiLocation(fake_so, tuple(include_dirs.split(os.pathsep)), int(api_version))
    prepared = native.prepare(cache_dir=native.Path(cache_dir), location=location)
    if prepared is None:
        print(native.last_failure, file=sys.stderr)
        return 3
    fake = ctypes.CDLL(fake_so)  # the same library the recorder resolved: what a candidate could reach
    fake.fake_kernel.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64]
    fake.fake_memcpy.argtypes = [ctypes.c_uint64, ctypes.c_uint8, ctypes.c_uint64, ctypes.c_uint64]
    fake.fake_drop.argtypes = [ctypes.c_size_t]

    if scenario == "attach_later":
        recorder = prepared.start(-1, driver=fake_so)
        assert recorder is not None, native.last_failure
        fake.fake_kernel(b"before_assignment", 100, 0)
        recorder.flush()  # delivered while no descriptor is attached: discarded, counted
        assert recorder.attach(fd)
        assert not recorder.attach(fd)  # once only
    else:
        recorder = prepared.start(fd, driver=fake_so)
        assert recorder is not None, native.last_failure
    assert native.active() is recorder
    if scenario == "threads":  # markers from two threads while a third flushes: one numbered stream
        import threading

        together = threading.Barrier(3)
        done = threading.Event()

        def marks(first: int) -> None:
            together.wait()
            for label in range(first, first + 1000):
                recorder.mark(label, 0)

        def flushes() -> None:
            together.wait()
            while not done.is_set():
                recorder.flush(synchronize=False)

        workers = [threading.Thread(target=marks, args=(BASE + offset,)) for offset in (10_000, 20_000)]
        flusher = threading.Thread(target=flushes)
        for thread in (*workers, flusher):
            thread.start()
        for worker in workers:
            worker.join()
        done.set()
        flusher.join()

    recorder.mark(BASE, 0)
    fake.fake_kernel(b"add_kernel", 5000, 0)
    fake.fake_memcpy(4096, 2, 800, 0)  # device to host
    if scenario == "forged":  # a candidate writes a kernel record of its own into the descriptor
        name = b"add_kernel"
        body = struct.pack("<QQIIII3i3iH", 10, 20, 7, 1, 0, 1, 1, 1, 1, 1, 1, 1, len(name)) + name
        os.write(fd, struct.pack("<IHHI", 0x52464552, 2, 12 + len(body), 3) + body)
    if scenario == "garbage":
        os.write(fd, b"\x00garbage written by the candidate\xff" * 3)
    if scenario == "silence_kernels":  # cuptiActivityDisable(CONCURRENT_KERNEL) through ctypes
        fake.cuptiActivityDisable(10)
    if scenario == "silence_all":
        for kind in (1, 2, 10):
            fake.cuptiActivityDisable(kind)
    if scenario == "imitate_marker":  # a memset shaped like the next marker
        fake.cuMemsetD32Async(ctypes.c_uint64(0x9000), ctypes.c_uint(BASE + 1), ctypes.c_size_t(1), ctypes.c_void_p(0))
    if scenario == "dropped":
        fake.fake_drop(3)
    recorder.mark(BASE + 1, 0)
    fake.fake_kernel(b"_ZN2at6native29vectorized_elementwise_kernelILi4EEEvi", 3000, 0)
    fake.fake_kernel(b"add_kernel", 2000, 0)
    recorder.mark(BASE + 2, 0)
    recorder.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
