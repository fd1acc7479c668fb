"""What :func:`gapscope.hf.diagnose.diagnose` returns: its tidy rows, as a DataFrame that also reads
itself out (a notebook shows its verdicts and heatmaps; ``plot()`` draws the per-layer figure)."""

from __future__ import annotations

from typing import Any

import pandas as pd


class Diagnosis(pd.DataFrame):
    """The rows of one diagnosis (every DataFrame operation works on it; what it derives is a plain
    DataFrame) and its reading: :meth:`summary`, :meth:`verdicts`, :meth:`plot`, :meth:`page`, and
    in Jupyter the verdicts and layer x head heatmaps inline instead of the raw rows.

    Note that :meth:`plot` draws the diagnosis figure; pandas' plotting stays at
    ``pd.DataFrame(result).plot``.
    """

    def __init__(self, data: Any = None, *args: Any, attrs: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(data, *args, **kwargs)
        if attrs is not None:
            self.attrs = dict(attrs)

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame  # a slice or a groupby result is plain data, not a diagnosis

    @property
    def label(self) -> str:
        """The model's label as every line, table and page shows it."""
        return str(self.attrs.get("model", ""))

    def summary(self) -> dict[str, Any]:
        """The flat dict of numbers of :func:`gapscope.hf.verdict.summary` (its keys in GLOSSARY)."""
        from gapscope.hf.verdict import summary

        return summary(self)

    def verdicts(self) -> list[str]:
        """The model's verdict line, then one line per layer (:mod:`gapscope.hf.verdict`)."""
        from gapscope.hf.verdict import layer_verdicts, model_verdict

        return [model_verdict(self), *layer_verdicts(self)]

    def plot(self, baseline: pd.DataFrame | None = None) -> Any:
        """The per-layer figure (:func:`gapscope.plot.diagnosis_figure`), a matplotlib Figure;
        ``baseline`` (the same architecture at random init) is drawn dashed grey."""
        from gapscope.plot import diagnosis_figure

        return diagnosis_figure(self, self.label, baseline)

    def page(self, **options: Any) -> str:
        """The whole HTML page (:func:`gapscope.hf.page.diagnosis_page`)."""
        from gapscope.hf.page import diagnosis_page

        return diagnosis_page(self, **options)

    def _repr_html_(self) -> str | None:
        """Jupyter's view: verdicts, heatmaps with colour bars and the glossary, no raw rows."""
        from gapscope.hf.page import model_section

        if self.empty or "kind" not in self.columns:
            return super()._repr_html_()
        return model_section(self.label, self, None, figure=False)
