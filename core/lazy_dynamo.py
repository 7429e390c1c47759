"""Keep ``torch._dynamo`` out of processes that never compile anything.

Why: ``torch.optim.Optimizer.add_param_group`` (and ``zero_grad``, ``state_dict``,
``load_state_dict``) are wrapped by ``torch._compile._disable_dynamo``. On its first call
that wrapper imports ``torch._dynamo`` (and with it sympy and most of the compiler stack:
1-2 s of CPU on this project's 2-core machine, measured in ``benchmarks/startup.py``) only to
build a "do not trace this function" wrapper, then caches it in ``fn.__dynamo_disable``.

What it does: for every such wrapped function of ``torch.optim.Optimizer`` it pre-seeds that
cache with a small dispatcher. While ``torch._dynamo`` has not been imported by anyone,
nothing can be tracing (``torch.compile`` imports it first), so the dispatcher calls the
plain function: the "disable" wrapper would only have switched off a tracer that is not
running. As soon as ``torch._dynamo`` is in ``sys.modules`` (the user compiles something,
or any library imports it), the dispatcher builds torch's own ``torch._dynamo.disable``
wrapper exactly as ``_disable_dynamo`` would have, caches it, and delegates to it from then
on, so compiled user code sees torch's behaviour unchanged.

The same holds for ``step`` of SGD, Adam and AdamW: torch wraps it in
``_use_grad_for_differentiable``, whose wrapper does ``import torch._dynamo`` on every call
just to place two ``graph_break()`` markers (no-ops outside tracing) around the update. The
class's ``step`` is replaced, before any optimiser of that class exists, by a wrapper that
sets the grad mode exactly as torch's does and calls the same update function; once
``torch._dynamo`` is imported it calls torch's original wrapper instead. If you
``torch.compile`` a training step, import ``torch._dynamo`` before ``modalscope.engine`` and
nothing is patched at all.

Numerics are untouched: the same Python function runs on the same tensors
(``tests/test_startup.py`` checks that training is bit-identical with and without the
import). On a torch without ``torch._compile._disable_dynamo`` this does nothing.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

_INSTALLED = False


def _dispatcher(fn: Callable, recursive: bool) -> Callable:
    real: Callable | None = None

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal real
        if real is None:
            if "torch._dynamo" not in sys.modules:
                return fn(*args, **kwargs)
            import torch._dynamo

            real = torch._dynamo.disable(fn, recursive, wrapping=False)
        return real(*args, **kwargs)

    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call


def install() -> int:
    """Pre-seed the ``_disable_dynamo`` caches of ``torch.optim.Optimizer``; returns how many.

    Idempotent; a no-op (returns 0) once ``torch._dynamo`` is already imported, because then
    the import cost is already paid and torch's own path is the one to take.
    """
    global _INSTALLED
    if _INSTALLED or "torch._dynamo" in sys.modules:
        return 0
    try:
        import torch
        from torch._compile import _disable_dynamo
    except ImportError:  # pragma: no cover - older/newer torch without the helper
        return 0
    inner_code = _disable_dynamo(lambda: None).__code__
    n = 0
    for name, attr in vars(torch.optim.Optimizer).items():
        if not callable(attr) or getattr(attr, "__code__", None) is not inner_code:
            continue
        cells = dict(zip(attr.__code__.co_freevars, (c.cell_contents for c in attr.__closure__ or ())))
        fn, recursive = cells.get("fn"), cells.get("recursive", True)
        if fn is None or getattr(fn, "__dynamo_disable", None) is not None:
            continue
        fn.__dynamo_disable = _dispatcher(fn, recursive)
        n += 1
    n += _patch_steps(torch)
    _INSTALLED = True
    return n


def _lean_step(original: Callable, update: Callable) -> Callable:
    import torch

    def step(self, *args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" in sys.modules:
            return original(self, *args, **kwargs)
        prev = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            return update(self, *args, **kwargs)
        finally:
            torch.set_grad_enabled(prev)

    step.__wrapped__ = update  # type: ignore[attr-defined]
    step.__doc__ = update.__doc__
    return step


def _patch_steps(torch) -> int:
    try:
        from torch.optim.optimizer import _use_grad_for_differentiable
    except ImportError:  # pragma: no cover
        return 0
    use_grad_code = _use_grad_for_differentiable(lambda self: None).__code__
    n = 0
    for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        original = vars(cls).get("step")
        if original is None or getattr(original, "hooked", False) or getattr(original, "__code__", None) is not use_grad_code:
            continue
        update = getattr(original, "__wrapped__", None)
        if update is None:
            continue
        cls.step = _lean_step(original, update)
        n += 1
    return n
