"""``--compile``: ``torch.compile`` on a model's networks, while Pyro's tracing stays eager.

What is compiled are the tensor-to-tensor networks: the encoder's feature network, the decoder,
and the networks inside the guide head (its linear maps, an IAF step's autoregressive network),
and a conditional model's prior and classifier networks. Pyro's ``pyro.sample`` sites, plates,
poutine handlers and the distributions stay in Python, as without compilation.

Each network is compiled in place with ``nn.Module.compile``, so its ``state_dict`` keys do not
change (no ``_orig_mod.`` prefix): checkpoints of compiled runs load into eager models, and the
other way round.

Measured on CPU (``benchmarks/step_overhead.py``, ``benchmarks/RESULTS.md``), a compiled step is not
faster than an eager one, so compilation is off unless asked for. It replaces ``--jit``
(``torch.jit.trace``, which torch deprecates).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator

import torch
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn

from pyro_vae.models.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

BACKEND = "inductor"  # torch.compile's default; tests use "eager" (dynamo alone), which compiles in a moment

NETWORKS: tuple[type[nn.Module], ...] = (
    MLPEncoder,
    MLPDecoder,
    ConvEncoder,
    ConvDecoder,
    AutoRegressiveNN,
    ConditionalAutoRegressiveNN,
    nn.Sequential,
    nn.Linear,
)  # tensors in, tensors out: what torch.compile takes whole


def networks(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of each outermost submodule of ``model`` that is one of :data:`NETWORKS`."""
    for name, child in model.named_children():
        if isinstance(child, NETWORKS):
            yield name, child
        else:
            yield from ((f"{name}.{n}", m) for n, m in networks(child))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


@functools.cache
def unavailable(backend: str = BACKEND) -> str | None:
    """Why ``torch.compile`` with ``backend`` cannot run here (e.g. no C++ compiler for inductor, or
    a Python that dynamo does not support), found by compiling and running a one-line function; None
    when it runs. Cached per process."""
    try:
        probe = torch.compile(lambda t: t * 2 + 1, backend=backend, dynamic=False)
        probe(torch.ones(2))
    except Exception as e:  # compilers fail with many types
        return _first_line(e)
    return None


def _notice(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def compile_networks(model: nn.Module, backend: str | None = None, notice: Callable[[str], None] = _notice) -> bool:
    """Compile every network of ``model`` (:func:`networks`) in place with ``torch.compile``.

    When compilation is unavailable, ``notice`` gets one line saying why and the model stays eager.

    :param str backend: torch.compile's backend (default :data:`BACKEND`).
    :returns: whether the networks were compiled.
    """
    backend = backend or BACKEND
    reason = unavailable(backend)
    if reason is not None:
        notice(f"pyro-vae: torch.compile is unavailable here ({reason}); training with eager networks")
        return False
    # stl and dreg on flows backpropagate through a flow step's graph several times (retain_graph,
    # pyro_vae.inference.pathwise), which a compiled backward with donated buffers refuses
    functorch_config = getattr(getattr(torch, "_functorch", None), "config", None)
    if functorch_config is not None and hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False
    for _, module in networks(model):
        module.compile(backend=backend)
    return True
