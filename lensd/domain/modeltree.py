"""Reading PyAutoFit ``model.json`` trees: which classes sit where, and which values are fixed.

The model is data from an untrusted file, so it is walked, never instantiated: class paths are
kept as strings and nothing named in them is imported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

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


def class_nodes(model: Any) -> dict[str, str]:
    """Path → class path of every node that names a class (``""`` is the root)."""
    return {path: payload for path, kind, payload in walk(model) if kind == "class"}


def constants(model: Any) -> dict[str, Any]:
    """Path → fixed value, for parameters the search did not vary."""
    return {path: payload for path, kind, payload in walk(model) if kind == "constant"}


def prior_paths(model: Any) -> list[str]:
    """Paths of the free parameters, in the model's own order."""
    return [path for path, kind, _ in walk(model) if kind == "prior"]


def class_name(class_path: str) -> str:
    """The bare class name: ``lensmodels.Isothermal`` → ``Isothermal``."""
    return class_path.rsplit(".", 1)[-1]
