"""What both harness roles need: the device, version facts, loading a module from a file, and
turning an exception into a short, useful report."""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from types import ModuleType
from typing import Any

import torch

from .messages import Environment, ErrorDetail, ErrorReply

MAX_TRACEBACK_CHARS = 4000


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA was requested but torch.cuda.is_available() is False")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def prepare_device(requested: str) -> None:
    """Make the device ready before any submitted code is loaded: the CUDA context and Triton's
    driver (whose C utilities the warm pool seeded into this process's Triton cache)."""
    device = resolve_device(requested)
    if device.type == "cuda":
        torch.empty(1, device=device)
        torch.cuda.synchronize(device)
        import triton

        triton.runtime.driver.active.get_current_device()


def environment(device: torch.device) -> Environment:
    import triton

    return Environment(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch=torch.__version__,
        triton=triton.__version__,
        python=sys.version.split()[0],
        interpreter=os.environ.get("TRITON_INTERPRET") == "1",
    )


def write_source(path: str, source: str) -> str:
    """Write the submitted source (sent with `setup`) to the path it names, in this process's own
    directory, before anything is imported; return the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(source)
    return path


def load_module(path: str, name: str) -> ModuleType:
    """Import a source file as module `name` (Triton reads kernel source through the file)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def trimmed_traceback(exc: BaseException, keep_file: str | None = None) -> str:
    """The exception line plus the frames from the submitted file (or the last few frames)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if keep_file is not None:
        own = [frame for frame in frames if frame.filename == keep_file]
        frames = traceback.StackSummary.from_list(own or frames[-3:])
    else:
        frames = traceback.StackSummary.from_list(frames[-5:])
    text = "".join(frames.format()) + "".join(traceback.format_exception_only(type(exc), exc))
    if keep_file is not None:  # the job directory is nobody's business; name the file only
        text = text.replace(keep_file, os.path.basename(keep_file))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = text[: MAX_TRACEBACK_CHARS // 2] + "\n…\n" + text[-MAX_TRACEBACK_CHARS // 2 :]
    return text


def error_reply(kind: str, exc: BaseException, keep_file: str | None = None) -> ErrorReply:
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return ErrorReply(
        error=ErrorDetail(
            kind=kind, type=type(exc).__name__, message=message[:MAX_TRACEBACK_CHARS], traceback=trimmed_traceback(exc, keep_file)
        )
    )


def host_clock_autotuning() -> None:
    """Triton's interpreter has no GPU driver, so `@triton.autotune` cannot benchmark its configs
    there; give it a host-clock benchmarker (interpreter only: on a GPU, Triton's own is used)."""
    import functools
    import time

    from triton.runtime.autotuner import Autotuner

    original = Autotuner.__dict__.get("do_bench")
    if isinstance(original, functools.cached_property):
        original_get = original.func
    elif isinstance(original, property) and original.fget is not None:
        original_get = original.fget
    else:
        return

    def bench(kernel_call: Any, quantiles: Any = None, **_: Any) -> list[float]:
        start = time.perf_counter()
        kernel_call()
        elapsed = (time.perf_counter() - start) * 1e3
        return [elapsed] * (len(quantiles) if quantiles else 1)

    def do_bench(self: Any) -> Any:
        return bench if getattr(self, "_do_bench", None) is None else original_get(self)

    Autotuner.do_bench = property(do_bench)
