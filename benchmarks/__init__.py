"""The project's benchmarks: tooling that measures the product, kept outside the wheel.

``python -m benchmarks`` runs the sections and writes ``BENCHMARKS.md``::

    python -m benchmarks                                # every section
    python -m benchmarks --only latency,quality         # the others keep their stored numbers
    python -m benchmarks --quick --out runs/bench-smoke # smoke-test sizes
    python -m benchmarks --render-only                  # rewrite the page from the stored results

Each section is a module with ``run(cfg, log) -> dict`` that measures and returns plain data
(``search``, ``search_cost``, ``latency``, ``quality``, ``demo``, ``gpu``); ``common.py`` holds the
settings and the results file (``<out>/results.json``, merged section by section); ``render.py`` is the
one place that turns the stored data into Markdown. ``search_cost.py``, ``quality.py`` and
``train_builtin.py`` also run alone (``python -m benchmarks.search_cost``, ``python -m benchmarks.quality
--dataset both --jobs 2``, ``python benchmarks/train_builtin.py``); ``baselines.py`` holds the plain-CNN
reference network of the quality section.
``shapes.py`` writes a second synthetic data set, unlike the built-in digits, in the ``folder:`` layout
(``python -m benchmarks.shapes --out DIR``), so a claim can be checked on more than one data set.
"""
import nni_rspnet  # noqa: F401  (first: makes torchvision importable on CPU torch)
