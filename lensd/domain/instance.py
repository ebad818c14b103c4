"""Read-only model instances: the tree a user walks with attribute access.

PyAutoFit rebuilds real objects by importing class paths read from disk; lensd never imports
anything it reads, so an instance is a tree of plain nodes that know their ``class_path`` and
print like the object they stand for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from lensd.domain.modeltree import class_name


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
        children = {
            key: cls._build(value, classes, f"{prefix}.{key}" if prefix else key)
            if isinstance(value, dict) else value
            for key, value in tree.items()
        }
        return cls(classes.get(prefix), children)

    @property
    def class_path(self) -> str | None:
        return self._class_path  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._children[name]
        except KeyError:
            raise AttributeError(f"instance has no attribute {name!r}") from None

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
            else:
                flat[path] = value
        return flat

    def _tuple(self, key: str) -> tuple[Any, ...] | None:
        """This node's values as a tuple when it is a tuple parameter stored under ``key``.

        PyAutoFit flattens ``centre=(y, x)`` to ``centre.centre_0``, ``centre.centre_1``: a node
        without a class whose children are exactly ``<key>_0 .. <key>_n`` is printed as a tuple.
        """
        children = self._children
        if self._class_path is not None or not children or any(isinstance(v, Instance) for v in children.values()):
            return None
        names = [f"{key}_{i}" for i in range(len(children))]
        if set(children) != set(names):
            return None
        return tuple(children[name] for name in names)

    def __repr__(self) -> str:
        name = class_name(self._class_path) if self._class_path else "Collection"
        parts = []
        for key, value in self._children.items():
            values = value._tuple(key) if isinstance(value, Instance) else None
            parts.append(f"{key}={values!r}" if values is not None else f"{key}={value!r}")
        return f"{name}({', '.join(parts)})"

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td>{escape(path)}</td><td>{escape(repr(value))}</td></tr>"
            for path, value in self.to_flat().items()
        )
        title = escape(self._class_path or "Collection")
        return f"<table><caption>{title}</caption>{rows}</table>"
