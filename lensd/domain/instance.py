"""Read-only model instances: the tree a user walks with attribute access.

PyAutoFit rebuilds real objects by importing class paths read from disk; lensd never imports
anything it reads, so an instance is a tree of plain nodes that know their ``class_path`` and
print like the object they stand for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from lensd.domain.modeltree import class_name


class TupleNode(tuple):  # type: ignore[type-arg]
    """A tuple parameter (``centre=(y, x)``): a real tuple, also reachable as ``.centre_0``.

    PyAutoFit flattens ``centre`` to ``centre.centre_0``, ``centre.centre_1``; an instance gives
    it back as the tuple PyAutoFit's objects hold, so ``centre[0]`` and ``y, x = centre`` work.
    """

    _names: tuple[str, ...]

    def __new__(cls, names: tuple[str, ...], values: tuple[Any, ...]) -> TupleNode:
        node = super().__new__(cls, values)
        node._names = names
        return node

    def __getattr__(self, name: str) -> Any:
        names = self.__dict__.get("_names", ())
        if name in names:
            return self[names.index(name)]
        raise AttributeError(f"tuple has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return [*self._names, *super().__dir__()]

    def __repr__(self) -> str:
        return repr(tuple(self))

    def __reduce__(self) -> Any:
        return (TupleNode, (self._names, tuple(self)))


def _as_tuple(key: str, children: Mapping[str, Any]) -> TupleNode | None:
    """Children named exactly ``<key>_0 .. <key>_n`` with plain values form a tuple."""
    names = tuple(f"{key}_{i}" for i in range(len(children)))
    if not children or set(children) != set(names) or any(isinstance(v, (dict, Instance)) for v in children.values()):
        return None
    return TupleNode(names, tuple(children[name] for name in names))


class Instance:
    """One node of an instance tree; children are reached as attributes or by ``node[key]``."""

    __slots__ = ("_children", "_class_path")

    def __init__(self, class_path: str | None, children: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_class_path", class_path)
        object.__setattr__(self, "_children", dict(children))

    @classmethod
    def from_flat(cls, values: Mapping[str, Any], classes: Mapping[str, str] | None = None) -> Instance:
        """Build the tree from dotted paths (``galaxies.lens.mass.einstein_radius``) and class paths."""
        classes = classes or {}
        tree: dict[str, Any] = {}
        for path, value in values.items():
            parts = path.split(".")
            node = tree
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):  # a value and a subtree share a name: keep the value
                    break
                node = child
            else:
                node[parts[-1]] = value
        for path in classes:  # class nodes with no values under them still show up
            if path:
                node = tree
                for part in path.split("."):
                    child = node.setdefault(part, {})
                    if not isinstance(child, dict):
                        break
                    node = child
        return cls._build(tree, classes, "")

    @classmethod
    def _build(cls, tree: dict[str, Any], classes: Mapping[str, str], prefix: str) -> Instance:
        children: dict[str, Any] = {}
        for key, value in tree.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                values = None if path in classes else _as_tuple(key, value)
                children[key] = values if values is not None else cls._build(value, classes, path)
            else:
                children[key] = value
        return cls(classes.get(prefix), children)

    @property
    def class_path(self) -> str | None:
        return self._class_path  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        # Private and special names are never children: copy and pickle look up ``__deepcopy__``
        # and co. on an object whose slots are not set yet, and ``self._children`` would land here
        # again, forever. A child whose name starts with "_" is still ``node["_name"]``.
        if name.startswith("_"):
            raise AttributeError(f"instance has no attribute {name!r}")
        try:
            return self._children[name]
        except KeyError:
            raise AttributeError(f"instance has no attribute {name!r}") from None

    def __reduce__(self) -> Any:
        """Copies and pickles (multiprocessing) rebuild the node from its class path and children."""
        return (Instance, (self._class_path, self._children))

    def __getitem__(self, name: str) -> Any:
        return self._children[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("instances are read-only")

    def __iter__(self) -> Iterator[str]:
        return iter(self._children)

    def __dir__(self) -> list[str]:
        return sorted(self._children)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Instance):
            return NotImplemented
        return bool(self._class_path == other._class_path and self._children == other._children)

    def __hash__(self) -> int:
        return hash((self._class_path, tuple(self._children)))

    def to_flat(self, prefix: str = "") -> dict[str, Any]:
        """Dotted path → value, the inverse of ``from_flat``."""
        flat: dict[str, Any] = {}
        for key, value in self._children.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, Instance):
                flat.update(value.to_flat(path))
            elif isinstance(value, TupleNode):
                flat.update({f"{path}.{name}": item for name, item in zip(value._names, value, strict=True)})
            else:
                flat[path] = value
        return flat

    def __repr__(self) -> str:
        name = class_name(self._class_path) if self._class_path else "Collection"
        parts = [f"{key}={value!r}" for key, value in self._children.items()]
        return f"{name}({', '.join(parts)})"

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td>{escape(path)}</td><td>{escape(repr(value))}</td></tr>"
            for path, value in self.to_flat().items()
        )
        title = escape(self._class_path or "Collection")
        return f"<table><caption>{title}</caption>{rows}</table>"
