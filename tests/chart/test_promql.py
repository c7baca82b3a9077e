"""The metric-name extractor used to check the alerts and the dashboard."""

from __future__ import annotations

import pytest

from .promql import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('absent(up{job="meltguard-operator", namespace="x"} == 1)', {"up"}),
        (
            'max by (namespace, policy) (a_total{state="melting"}) and on (namespace, policy) '
            'max by (namespace, policy) (b{phase=~"Hot|Melting"}) == 1',
            {"a_total", "b"},
        ),
        ("sum by (le) (rate(x_bucket[$__rate_interval]))", {"x_bucket"}),
        ('histogram_quantile(0.95, sum by (le) (rate(h_bucket{a="b"}[5m])))', {"h_bucket"}),
        ('count(g{namespace=~"$namespace"} == 0) or vector(0)', {"g"}),
        ('m{policy=~"$namespace/$policy"} offset 1h > 1e3', {"m"}),
        ("x / ignoring(tier) group_left(kind) y", {"x", "y"}),
        ('{__name__="only_matchers"}', {"only_matchers"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
