"""The five monitors of SpikingJelly: output, input, attribute, grad input, grad output.

Each is a :class:`~spikestore.monitor.BaseMonitor` with its ``function_on_*`` and the
hook that feeds it (forward, forward pre-hook, full backward hook). Their state is the
base monitor's, owned by the thread that runs the hooks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..writer import StoreWriter
from ._base import BaseMonitor, Instance

__all__ = [
    "OutputMonitor",
    "InputMonitor",
    "AttributeMonitor",
    "GradInputMonitor",
    "GradOutputMonitor",
]


def _output(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    x = args[1]
    if isinstance(x, tuple) and len(x) == 1:  # a 1-tuple gives its element
        x = x[0]
    return m.function_on_output(x)


def _input(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    x = args[0]
    if isinstance(x, tuple) and len(x) == 1:  # a 1-tuple gives its element
        x = x[0]
    return m.function_on_input(x)


def _attribute(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    return m.function_on_attribute(getattr(module, m.attribute_name))


def _grad_input(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    x = args[0]
    if isinstance(x, tuple) and len(x) == 1:  # a 1-tuple gives its element
        x = x[0]
    return m.function_on_grad_input(x)


def _grad_output(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    x = args[1]
    if isinstance(x, tuple) and len(x) == 1:  # a 1-tuple gives its element
        x = x[0]
    return m.function_on_grad_output(x)


class OutputMonitor(BaseMonitor):
    """Record ``function_on_output(output)`` of every selected module, to disk.

    Parameters
    ----------
    net : nn.Module
        The network.
    instance : type, str, regex, or a tuple/list of those, optional
        Which modules: by type (``None`` means ``type(net)``), or by name pattern
        (``"features.*.sn"``, ``re.compile(r"layer\\d+")``).
    function_on_output : callable
        Applied to each output; may return a tensor, a tuple/list of tensors,
        a number or ``None``.
    store, name, every, mode, overwrite, time_axis, dims
        See :class:`BaseMonitor`; ``name`` defaults to ``"output"``.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> with sm.OutputMonitor(net, torch.nn.ReLU) as mon:
    ...     _ = net(torch.ones(2, 4))
    ...     mon["1"][0].shape
    torch.Size([2, 3])
    """

    _default_name = "output"

    def __init__(
        self,
        net: nn.Module,
        instance: Instance = None,
        function_on_output: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.function_on_output = function_on_output
        self._attach(net, instance, "forward", _output)


class InputMonitor(BaseMonitor):
    """Record ``function_on_input(input)`` before every selected module runs.

    Parameters are those of :class:`OutputMonitor`; ``name`` defaults to
    ``"input"``.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> with sm.InputMonitor(net, torch.nn.Linear) as mon:
    ...     _ = net(torch.ones(2, 4))
    ...     len(mon.records)
    1
    """

    _default_name = "input"

    def __init__(
        self,
        net: nn.Module,
        instance: Instance = None,
        function_on_input: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.function_on_input = function_on_input
        self._attach(net, instance, "forward_pre", _input)


class AttributeMonitor(BaseMonitor):
    """Record ``function_on_attribute(module.<attribute_name>)`` of every selected module.

    Parameters
    ----------
    attribute_name : str
        The attribute, e.g. ``"v"`` or ``"v_seq"``; also the default ``name``.
    pre_forward : bool
        Read it before the module's forward (else after).
    net, instance, store, name, every, mode, overwrite, time_axis, dims
        As for :class:`OutputMonitor`.
    function_on_attribute : callable
        Applied to the attribute's value.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    >>> with sm.AttributeMonitor("running_mean", False, net, torch.nn.BatchNorm1d) as mon:
    ...     _ = net(torch.randn(4, 3))
    ...     mon.path.exists(), mon.name
    (True, 'running_mean')
    """

    def __init__(
        self,
        attribute_name: str,
        pre_forward: bool,
        net: nn.Module,
        instance: Instance = None,
        function_on_attribute: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=attribute_name if name is None else name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.attribute_name = attribute_name
        self.pre_forward = pre_forward
        self.function_on_attribute = function_on_attribute
        self._attach(net, instance, "forward_pre" if pre_forward else "forward", _attribute)

    def _has_batch(self, module: nn.Module) -> bool:
        # A neuron's state (v, v_seq) is shaped like its output; other attributes
        # (a BatchNorm's running_mean) are not batch-first.
        return getattr(module, "step_mode", None) is not None or any(
            c.__module__.split(".")[0] in ("spikingjelly", "snntorch", "norse")
            for c in type(module).__mro__
        )


class GradInputMonitor(BaseMonitor):
    """Record ``function_on_grad_input(dL/d input)`` of every selected module.

    Uses ``register_full_backward_hook``; the gradient of an input that needs
    none is ``None`` and is recorded as such. ``name`` defaults to
    ``"grad_input"``; other parameters as for :class:`OutputMonitor`.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> with sm.GradInputMonitor(net, torch.nn.Tanh, torch.norm) as mon:
    ...     net(torch.ones(2, 4)).sum().backward()
    ...     len(mon.records)
    1
    """

    _default_name = "grad_input"

    def __init__(
        self,
        net: nn.Module,
        instance: Instance = None,
        function_on_grad_input: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.function_on_grad_input = function_on_grad_input
        self._attach(net, instance, "backward", _grad_input)


class GradOutputMonitor(BaseMonitor):
    """Record ``function_on_grad_output(dL/d output)`` of every selected module.

    ``name`` defaults to ``"grad_output"``; parameters as for
    :class:`OutputMonitor`.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> with sm.GradOutputMonitor(net, torch.nn.Tanh) as mon:
    ...     net(torch.ones(2, 4)).sum().backward()
    ...     mon[0]
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    """

    _default_name = "grad_output"

    def __init__(
        self,
        net: nn.Module,
        instance: Instance = None,
        function_on_grad_output: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.function_on_grad_output = function_on_grad_output
        self._attach(net, instance, "backward", _grad_output)
