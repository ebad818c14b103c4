"""The trusted bridge: lensd fits as PyAutoFit objects, for PyAutoLens's aggregator helpers.

``al.agg.TracerAgg(aggregator=...)``, ``FitImagingAgg``, ``ImagingAgg`` and other
``af.Aggregator``-style code call ``map``, ``values``, ``fit.value(name)``, ``fit.model``,
``fit.instance``, ``fit.samples``, ``fit.children``, ``fit.parent``, ``grid_searches()`` and
``best_fits()``. This module gives them those calls over a lensd database, rebuilding models,
instances, searches and samples with PyAutoFit's own ``from_dict``.

That imports every class path stored in the database (``model.json`` names the classes of a
fit's model; so do ``search.json``, ``cosmology.json``, ``samples_info.json``), and importing a
module runs its code. A database written by someone else can name any module, so this bridge is
for databases you trust, reached only by an explicit act: importing this module (it needs
``autofit``) and wrapping an aggregator, ``lensd.autofit.Aggregator(agg)`` or
``agg.as_autofit(trust=True)``. lensd's default API never imports a class path (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import autofit as af  # the bridge exists only where PyAutoFit is installed
from autonerves.class_path import get_class
from autonerves.dictable import from_dict

from lensd.domain.samples import Samples
from lensd.errors import LensdError
from lensd.query.nodes import Column
from lensd.query.state import QueryState
from lensd.store.reader import Fit as LensdFit

if TYPE_CHECKING:  # lensd.aggregator imports this module (as_autofit); only its shape is needed here
    from typing import Protocol

    class LensdAggregator(Protocol):
        def _with(self, state: QueryState) -> LensdAggregator: ...

        def fits(self) -> Iterator[LensdFit]: ...
        def __len__(self) -> int: ...
        def __getitem__(self, item: slice) -> LensdAggregator: ...
        def query(self, predicate: Any) -> LensdAggregator: ...
        def order_by(self, key: Any, reverse: bool = False) -> LensdAggregator: ...
        def grid_searches(self) -> LensdAggregator: ...
        def children(self) -> LensdAggregator: ...

__all__ = ["Aggregator", "Fit", "samples_for"]

def _typed(value: Any) -> bool:
    """A JSON tree PyAutoFit's ``from_dict`` rebuilds (it names a type), not a plain dict."""
    return isinstance(value, Mapping) and isinstance(value.get("type"), str)


def samples_for(samples: Samples, samples_info: Mapping[str, Any] | None, model: Any) -> Any:
    """PyAutoFit's Samples object (``SamplesNest``, ``SamplesMCMC``, ...) for lensd's arrays.

    The class is the one ``samples_info.json`` names, as PyAutoFit's own loader does; columns are
    matched to the model by path, so samples.csv's header order does not matter.
    """
    info = dict(samples_info or {})
    sample_list = [
        af.Sample(log_likelihood=float(ll), log_prior=float(lp), weight=float(w),
                  kwargs={tuple(path.split(".")): float(v) for path, v in zip(samples.paths, row, strict=True)})
        for row, ll, lp, w in zip(samples.parameters, samples.log_likelihood, samples.log_prior,
                                  samples.weight, strict=True)
    ]
    class_path = info.get("class_path")
    cls = get_class(class_path) if isinstance(class_path, str) else af.SamplesPDF
    return cls.from_list_info_and_model(sample_list=sample_list, samples_info=info, model=model)


class Fit:
    """One lensd fit with PyAutoFit's ``Fit`` interface; values are rebuilt when first asked for."""

    def __init__(self, fit: LensdFit, aggregator: Aggregator) -> None:
        self._fit = fit
        self._aggregator = aggregator

    # -- identity, as PyAutoFit's Fit has it: lensd's columns, read through
    id = property(lambda self: str(self._fit.id))
    name = property(lambda self: self._fit.name)
    unique_tag = property(lambda self: self._fit.unique_tag)
    path_prefix = property(lambda self: self._fit.path_prefix)
    is_complete = property(lambda self: self._fit.is_complete)
    is_grid_search = property(lambda self: self._fit.is_grid_search)
    parent_id = property(lambda self: self._fit.parent_id)
    max_log_likelihood = property(lambda self: self._fit.max_log_likelihood)

    @property
    def unwrapped(self) -> LensdFit:
        """The lensd fit underneath (plain data, nothing imported)."""
        return self._fit

    # -- PyAutoFit objects, rebuilt by from_dict (this imports the stored class paths)
    @cached_property
    def model(self) -> Any:
        model = self._fit.model
        return None if model is None else from_dict(model)

    @cached_property
    def search(self) -> Any:
        search = self._fit.search
        return None if search is None else from_dict(search)

    @cached_property
    def samples(self) -> Any:
        samples = self._fit.samples
        if samples is None:
            return None
        return samples_for(samples, self._fit.file("samples_info"), self.model)

    @cached_property
    def samples_summary(self) -> Any:
        summary = self._fit.summary
        if summary is None:
            return None
        rebuilt = from_dict(summary)
        rebuilt.model = self.model
        return rebuilt

    @property
    def instance(self) -> Any:
        """The max-likelihood instance: from the samples, else from the samples summary."""
        samples = self.samples
        if samples is not None:
            return samples.max_log_likelihood()
        summary = self.samples_summary
        return None if summary is None else summary.instance

    def value(self, name: str) -> Any:
        """What PyAutoFit's ``fit.value(name)`` gives: a rebuilt JSON file, an array, an HDUList,
        None when the fit has no such output."""
        if name in ("samples", "model", "search", "samples_summary", "instance"):
            return getattr(self, name)
        if name == "summary":
            return self.samples_summary
        if name == "info":
            return self._fit.info
        value = self._fit.value(name)
        return from_dict(value) if _typed(value) else value

    def child_values(self, name: str) -> list[Any]:
        return [child.value(name) for child in self.children]

    @cached_property
    def children(self) -> list[Fit]:
        """The fits nested in this one: analyses of a multi-analysis fit, cells of a grid search."""
        return list(self._aggregator._children_of([self.id]))

    @cached_property
    def parent(self) -> Fit | None:
        if self.parent_id is None:
            return None
        return next(iter(self._aggregator._everything(Column("id") == self.parent_id)), None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.value(name)

    def __repr__(self) -> str:
        return f"<lensd.autofit.Fit {self.id} {self.unique_tag}/{self.name}>"


class Aggregator:
    """An ``af.Aggregator`` over a lensd aggregator's fits: iterate, ``values``, ``map``, ``query``.

    Query fields (``agg.model.galaxies.lens.mass``, ``agg.search.unique_tag``, ...) are lensd's,
    so ``agg.query(agg.model.galaxies.lens.mass == al.mp.Isothermal)`` reads as in PyAutoFit.
    """

    def __init__(self, aggregator: LensdAggregator, trust: bool = True) -> None:
        """Wrapping is the act of trust (importing this module needs autofit, and it imports the
        database's class paths as PyAutoFit does); ``trust=False`` refuses."""
        if trust is not True:
            raise LensdError("lensd.autofit imports the class paths stored in the database: "
                             "use it only for databases you trust")
        self._agg = aggregator

    @property
    def unwrapped(self) -> LensdAggregator:
        """The lensd aggregator underneath."""
        return self._agg

    def _wrap(self, aggregator: LensdAggregator) -> Aggregator:
        return Aggregator(aggregator)

    def __iter__(self) -> Iterator[Fit]:
        return (Fit(fit, self) for fit in self._agg.fits())

    def __len__(self) -> int:
        return len(self._agg)

    def __getitem__(self, item: int | slice) -> Any:
        if isinstance(item, slice):
            return self._wrap(self._agg[item])
        fits = list(self)
        return fits[item]

    def __getattr__(self, name: str) -> Any:
        """Query fields and anything else lensd's aggregator has (``model``, ``search``, ``info``)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._agg, name)

    def query(self, *predicates: Any) -> Aggregator:
        aggregator = self._agg
        for predicate in predicates:
            aggregator = aggregator.query(predicate)
        return self._wrap(aggregator)

    def order_by(self, key: Any, reverse: bool = False) -> Aggregator:
        return self._wrap(self._agg.order_by(key, reverse))

    def values(self, name: str, parser: Callable[[Any], Any] = lambda value: value) -> Generator[Any, None, None]:
        """One value per fit, None where a fit lacks it, as PyAutoFit's aggregator gives them."""
        for fit in self:
            yield parser(fit.value(name))

    def child_values(self, name: str) -> Generator[list[Any], None, None]:
        for fit in self:
            yield fit.child_values(name)

    def map(self, func: Callable[[Fit], Any]) -> Iterator[Any]:
        return map(func, self)

    def grid_searches(self) -> Aggregator:
        """The grid-search parents; ``best_fits()`` then gives each one's best cell."""
        return self._wrap(self._agg.grid_searches())

    def children(self) -> Aggregator:
        return self._wrap(self._agg.children())

    def best_fits(self) -> Aggregator:
        """For each selected grid search, the cell with the highest max log likelihood."""
        best: list[str] = []
        for grid in self:
            cells = [cell for cell in grid.children if cell.max_log_likelihood is not None]
            if cells:
                best.append(max(cells, key=lambda cell: float(cell.max_log_likelihood or 0.0)).id)
        return self._wrap(_scope(self._agg, Column("id").in_(best)))

    def _children_of(self, ids: list[str]) -> Iterator[Fit]:
        return iter(self._wrap(_scope(self._agg, Column("parent_id").in_(ids))))

    def _everything(self, predicate: Any) -> Aggregator:
        return self._wrap(_scope(self._agg, predicate))

    def __repr__(self) -> str:
        return f"<lensd.autofit.Aggregator over {self._agg!r}>"


def _scope(aggregator: LensdAggregator, predicate: Any) -> LensdAggregator:
    """Fits of the same database matching ``predicate``, whatever ``aggregator`` had selected."""
    return aggregator._with(QueryState(predicate=predicate, top_level_only=False))
