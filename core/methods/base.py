"""The method interface: one small class per training method, hooks around loss and backward.

A method never owns the training loop and never writes to the run store. The trainer
(:mod:`modalscope.engine`) calls the hooks below in this order for every step::

    out   = method.forward(model, batch, ctx)          # default: model(batch)
    parts = method.loss(batch, out, ctx)               # -> LossParts
    method.backward(parts, ctx)                        # default: parts.total.backward()
    method.after_backward(ctx)                         # gradient modulation (OGM-GE, CAL ...)
    method.optimizer_step(ctx, closure)                # default: optimizer.step(); SAM re-evaluates

and ``on_epoch_start`` / ``on_epoch_end`` around every epoch (stage switches, GMM refits,
projection matrices). What a method wants logged goes through ``ctx.log(name, value)``
under its own prefix; the trainer batches it into the store. Internal state that must
survive a resume (running means, stages, matrices) is returned by ``state_dict``.

Adding a method = one new module with a ``@register_method`` class + one import line in
``core/methods/__init__.py``. Its hyperparameters are a pydantic ``Params`` model whose
``name`` literal is the registry key; the run config validates them (unknown keys and
out-of-range values are rejected with one line).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from modalscope.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from modalscope.engine import StepContext
    from modalscope.models.multimodal import ModelOutput


class MethodParams(BaseModel):
    """Base for a method's hyperparameters. Subclasses declare ``name: Literal["..."]``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass
class LossParts:
    """The loss of one step: ``total`` is back-propagated, ``parts`` are logged as ``loss/<k>``."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    per_sample: torch.Tensor | None = None


def task_loss(pred: torch.Tensor, target: torch.Tensor, task: str, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for classification, L1 for regression (MOSI convention)."""
    if task == "regression":
        return F.l1_loss(pred.reshape(-1), target.reshape(-1).to(pred.dtype), reduction=reduction)
    return F.cross_entropy(pred, target, reduction=reduction)


def fused_and_unimodal(out: "ModelOutput", y: torch.Tensor, task: str, weight: float = 0.0, keep_graph: bool = False) -> LossParts:
    """``L = CE(z, y) + weight·Σ_m CE(z_m, y)``, the loss most methods build on.

    Every unimodal term is always computed so it can be logged as ``loss/<m>``; it joins the
    back-propagated total only when ``weight > 0``. ``keep_graph`` keeps the unimodal parts
    attached (for methods that take per-loss gradients in ``backward``).
    """
    fused = task_loss(out.fused, y, task)
    parts: dict[str, torch.Tensor] = {"fused": fused}
    total = fused
    for m, z in out.logits.items():
        if weight > 0 or keep_graph:
            lm = task_loss(z, y, task)
            parts[m] = lm if keep_graph else lm.detach()
            if weight > 0:
                total = total + weight * lm
        else:  # only logged: the same value without recording an autograd graph for it
            with torch.no_grad():
                parts[m] = task_loss(z, y, task)
    return LossParts(total=total, parts=parts)


@dataclass(frozen=True)
class Panel:
    """One chart a method declares for the dashboard's *Method signals* view.

    The method knows what its signals mean, so it says how to read them: which logged
    scalars (``series``: exact names or ``fnmatch`` globs such as ``"ogm/coeff/*"``), in
    which ``unit``, on which ``y_range``, against which reference line (``ref_line`` with
    ``ref_label``), and one sentence (``reading``) telling a newcomer what to look for. A
    series is labelled by what its glob's ``*`` matched (``ogm/coeff/audio`` → ``audio``),
    else by ``labels`` or its last path part. ``shape="hv"`` draws steps (stages, counts).
    """

    title: str
    series: tuple[str, ...]
    unit: str
    reading: str
    y_range: tuple[float, float] | None = None
    ref_line: float | None = None
    ref_label: str = ""
    log_y: bool = False
    shape: str = "linear"
    labels: tuple[tuple[str, str], ...] = ()

    def matches(self, names) -> list[str]:
        """The logged names this panel draws, in declaration order then name order."""
        out: list[str] = []
        for pat in self.series:
            for n in sorted(names):
                if n not in out and (n == pat or fnmatch.fnmatchcase(n, pat)):
                    out.append(n)
        return out

    def label(self, name: str) -> str:
        given = dict(self.labels)
        if name in given:
            return given[name]
        for pat in self.series:
            if "*" in pat and fnmatch.fnmatchcase(name, pat):
                pre, _, post = pat.partition("*")
                return name[len(pre) : len(name) - len(post)] or name
        return name.rsplit("/", 1)[-1]


class Method:
    """Base class; every hook has a sensible default so a method overrides only what it changes."""

    name: ClassVar[str] = ""
    panels: ClassVar[tuple[Panel, ...]] = ()
    Params: ClassVar[type[MethodParams]] = MethodParams
    family: ClassVar[str] = "baseline"
    needs_train_eval: ClassVar[bool] = False
    min_modalities: ClassVar[int] = 1
    max_modalities: ClassVar[int | None] = None

    def __init__(self, params: MethodParams, modalities: list[str], task: str):
        self.params = params
        self.modalities = list(modalities)
        self.task = task

    @classmethod
    def check_config(cls, params: MethodParams, modalities: list[str], task: str) -> None:
        """Raise ConfigError when this method cannot run with these modalities / task."""
        n = len(modalities)
        if n < cls.min_modalities:
            raise ConfigError(f"method {cls.name!r} needs at least {cls.min_modalities} modalities, the data has {n}")
        if cls.max_modalities is not None and n > cls.max_modalities:
            raise ConfigError(f"method {cls.name!r} supports at most {cls.max_modalities} modalities, the data has {n}")

    @classmethod
    def unimodal_heads(cls, params: MethodParams) -> str | None:
        """Which per-modality logits the method needs (see :func:`modalscope.models.resolve_heads`).

        ``"trained"``: it trains unimodal losses, which must act on separate heads trained with
        the encoders (never on the fusion layer, whose weights the fused loss alone should set);
        ``"slice"``: it reads the fusion-layer slices and trains no unimodal loss; None: no
        preference. ``model.heads=auto`` builds what this returns; an explicit ``model.heads``
        overrides it with a warning when the two disagree.
        """
        return None

    @classmethod
    def used_modalities(cls, params: MethodParams, modalities: list[str]) -> list[str]:
        """Modalities the model is built with (``unimodal`` keeps one)."""
        return list(modalities)

    def setup(self, trainer: Any) -> None:
        """Called once after the model and optimiser exist (e.g. to add bottleneck layers)."""

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Trainable modules the method owns; they join the optimiser and the checkpoint."""
        return {}

    def forward(self, model: torch.nn.Module, batch: dict, ctx: "StepContext") -> "ModelOutput":
        return model(batch)

    def loss(self, batch: dict, out: "ModelOutput", ctx: "StepContext") -> LossParts:
        raise NotImplementedError

    def backward(self, parts: LossParts, ctx: "StepContext") -> None:
        parts.total.backward()

    def after_backward(self, ctx: "StepContext") -> None:
        """Edit ``.grad`` of the model's parameters (grouped by ``model.param_groups()``)."""

    def optimizer_step(self, ctx: "StepContext", closure: Callable[[], LossParts]) -> None:
        """Apply the update. ``closure`` re-runs forward+loss+backward (for SAM-style methods)."""
        ctx.optimizer.step()

    def on_epoch_start(self, ctx: "StepContext") -> None:
        pass

    def on_epoch_end(self, ctx: "StepContext") -> None:
        pass

    def train_indices(self, ctx: "StepContext") -> Any:
        """Dataset indices to train on this epoch, or None for the whole training split."""
        return None

    def predict(self, out: "ModelOutput") -> torch.Tensor:
        """Fused prediction used for accuracy (logits or probabilities)."""
        return out.fused

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def unimodal_losses(self, out: "ModelOutput", y: torch.Tensor, reduction: str = "mean") -> dict[str, torch.Tensor]:
        return {m: task_loss(z, y, self.task, reduction) for m, z in out.logits.items()}


_REGISTRY: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: ``@register_method("ogm_ge")``. The Params ``name`` literal must match."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        default = cls.Params.model_fields.get("name")
        if default is None or default.default != name:
            raise ValueError(f"{cls.__name__}.Params must declare name: Literal[{name!r}] = {name!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_method(name: str) -> type[Method]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def list_methods(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
