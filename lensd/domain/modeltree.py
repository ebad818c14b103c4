"""Reading PyAutoFit ``model.json`` trees: which classes sit where, and which values are fixed.

The model is data from an untrusted file, so it is walked, never instantiated: class paths are
kept as strings and nothing named in them is imported.

The jobs of one campaign send the same model with every fit. A model decoded from the wire keeps
the bytes it came as (``codec.Received``), and what a walk of it says (``Shape``) is remembered by
those bytes: each record asked for its constants and free paths three times, a tenth of
validating it (docs/performance.md, "Round 2, seventh pass").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from lensd.memo import Memo
from lensd.wire.codec import Received

STRUCTURAL_TYPES = frozenset({"model", "collection", "instance", "tuple_prior", "dict", "list"})
# Keys of a prior node that describe the prior rather than name a child parameter.
_PRIOR_KEYS = frozenset({"type", "id", "class_path", "arguments"})


def walk(model: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """Yield ``(path, kind, payload)`` for every node: kind is "class", "constant" or "prior".

    "class" carries the class path; "constant" the fixed value; "prior" the prior's type name.
    The nodes are listed by one recursive call per node rather than by nested generators, whose
    every item climbed the whole chain of ``yield from`` (each validated record walks its model
    twice: docs/performance.md, "Daemon ingest at K = 64, third pass").
    """
    nodes: list[tuple[str, str, Any]] = []
    _walk(model, prefix, nodes)
    return iter(nodes)


def _walk(model: Any, prefix: str, nodes: list[tuple[str, str, Any]]) -> None:
    if isinstance(model, Mapping):
        node_type = model.get("type")
        if node_type == "Constant":
            nodes.append((prefix, "constant", model.get("value")))
        elif node_type == "tuple":  # a fixed tuple: centre=(0.0, 0.0) in a model or an instance node
            _fixed_tuple(model.get("values"), prefix, nodes)
        elif node_type in STRUCTURAL_TYPES or (node_type is None and "arguments" in model):
            class_path = model.get("class_path")
            if isinstance(class_path, str) and class_path:
                nodes.append((prefix, "class", class_path))
            arguments = model.get("arguments")
            if isinstance(arguments, Mapping):
                for key, child in arguments.items():
                    _walk(child, f"{prefix}.{key}" if prefix else str(key), nodes)
        elif isinstance(node_type, str):
            nodes.append((prefix, "prior", node_type))
    elif (isinstance(model, (int, float, str, bool)) or model is None) and prefix:
        nodes.append((prefix, "constant", model))


def _fixed_tuple(values: Any, prefix: str, nodes: list[tuple[str, str, Any]]) -> None:
    """``{"type": "tuple", "values": [y, x]}`` at ``...centre`` is ``centre.centre_0`` and
    ``centre.centre_1``, the paths PyAutoFit gives the same tuple when it is free."""
    if not isinstance(values, list) or not prefix:
        return
    key = prefix.rsplit(".", 1)[-1]
    for i, value in enumerate(values):
        if isinstance(value, (int, float, str, bool)) or value is None:
            nodes.append((f"{prefix}.{key}_{i}", "constant", value))


@dataclass(frozen=True, eq=False)
class Shape:
    """What one walk of a model says; callers get copies (``class_nodes``, ...), never these."""

    class_nodes: dict[str, str]
    constants: dict[str, Any]
    prior_paths: tuple[str, ...]

    @classmethod
    def of(cls, model: Any) -> Shape:
        classes: dict[str, str] = {}
        fixed: dict[str, Any] = {}
        priors: list[str] = []  # a path twice stays twice, as the walk lists it
        for path, kind, payload in walk(model):
            if kind == "class":
                classes[path] = payload
            elif kind == "constant":
                fixed[path] = payload
            else:
                priors.append(path)
        return cls(classes, fixed, tuple(priors))


_SHAPES: Final[Memo[bytes, Shape]] = Memo()  # a received model's bytes -> its shape


def shape(model: Any) -> Shape:
    """``Shape.of(model)``, remembered by the bytes a received model came as (the same bytes are
    the same model); any other model is walked each time."""
    if not isinstance(model, Received):
        return Shape.of(model)
    return _SHAPES.get(model.packed, lambda: Shape.of(model))


def class_nodes(model: Any) -> dict[str, str]:
    """Path → class path of every node that names a class (``""`` is the root)."""
    return dict(shape(model).class_nodes)


def constants(model: Any) -> dict[str, Any]:
    """Path → fixed value, for parameters the search did not vary."""
    return dict(shape(model).constants)


def prior_paths(model: Any) -> list[str]:
    """Paths of the free parameters, in the model's own order."""
    return list(shape(model).prior_paths)


def class_name(class_path: str) -> str:
    """The bare class name: ``lensmodels.Isothermal`` → ``Isothermal``."""
    return class_path.rsplit(".", 1)[-1]
