"""Scenario 2: the CatalogPanel, filtered to one GPU and sorted by price, shows the
cheapest offer first (checked against the catalogs the sandbox serves)."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb.facade import all_providers

pytestmark = pytest.mark.browser


def offers_by_gpu() -> dict[str, list[tuple[float, str]]]:
    """Canonical GPU -> ``(price_per_hour, provider)`` of every priced offer, from the core
    API (not the notebook layer the panel is built on)."""
    offers: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for provider in all_providers():
        for g in atlas.list_gpu_types(provider=provider):
            if g.canonical and g.price_per_hour is not None:
                offers[g.canonical].append((g.price_per_hour, g.provider))
    return offers


def table_rows(panel: Any) -> list[dict[str, str]]:
    """The panel's visible price table (an HTML widget) as dicts, header -> cell text."""
    table = panel.locator("table").first
    heads = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    return [dict(zip(heads, (c.strip() for c in row.locator("td").all_inner_texts()),
                     strict=True))
            for row in table.locator("tbody tr").all()]


def test_filter_one_gpu_sort_by_price_shows_the_cheapest_first(
        open_notebook: Any, box: Any) -> None:
    offers = offers_by_gpu()
    # The GPU most providers sell, so that sorting has something to reorder.
    gpu = max(sorted(offers), key=lambda g: (len({p for _, p in offers[g]}), len(offers[g])))
    cheapest_price, cheapest_provider = min(offers[gpu])
    assert len({p for _, p in offers[gpu]}) >= 2, offers[gpu]

    nb = open_notebook("scenarios/catalog.ipynb")
    nb.run_all()
    assert nb.errors() == []
    page = nb.page
    # The panel's own controls (the SpawnPanel below it has a "gpu" field too).
    controls = page.locator(".widget-hbox").filter(has=page.get_by_label("max $/h"))
    panel = page.locator(".widget-vbox").filter(has=controls).filter(
        has_text="GPU prices").last
    panel.get_by_text(re.compile(r"^\d+ of \d+ offers")).wait_for()  # loaded

    controls.get_by_label("gpu", exact=True).select_option(gpu)
    sort = page.locator(".widget-hbox").filter(has=page.get_by_text("spot only")) \
        .get_by_label("sort by", exact=True)
    sort.select_option("provider")
    page.wait_for_function(
        "([el, p]) => el.querySelector('tbody tr td')?.textContent.trim() === p",
        arg=[panel.element_handle(), min(p for _, p in offers[gpu])])
    sort.select_option("price")
    page.wait_for_function(
        "([el, p]) => el.querySelector('tbody tr td')?.textContent.trim() === p",
        arg=[panel.element_handle(), cheapest_provider])

    rows = table_rows(panel)
    assert {r["gpu"] for r in rows} == {gpu}
    assert len(rows) == len(offers[gpu])
    first = rows[0]
    assert (first["provider"], first["$/h"]) == (cheapest_provider, f"${cheapest_price:.2f}")
    prices = [float(r["$/h"].lstrip("$")) for r in rows]
    assert prices == sorted(prices)
    nb.screenshot("catalog_panel", nb.cell("%atlas gpus --panel"))
