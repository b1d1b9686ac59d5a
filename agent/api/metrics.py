"""`GET /metrics`: Prometheus text from prometheus-client, one registry per agent.

Counters come from the checkout's own tallies and the outbox status at scrape time (a custom
collector), so nothing is double-counted and no background task is needed. Labels never
carry a card number or a basket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agent.api.checkout import Checkout
from agent.outbox import OutboxStatus

LATENCY_BUCKETS_S = (0.5, 1, 2, 3, 5, 8, 13, 20, 30)
StatsSource = Callable[[], dict[str, dict[str, Any]]]


class _Collector(Collector):
    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        c = self.owner.checkout
        d = CounterMetricFamily(
            "cumulus_decisions", "Cashier decisions by outcome", labels=["outcome"]
        )
        for outcome, n in c.stats.decisions.items():
            d.add_metric([outcome], n)
        yield d
        h = HistogramMetricFamily(
            "cumulus_prompt_latency_seconds", "Card read to cashier decision (record or skip)"
        )
        lat = [ms / 1000 for ms in c.stats.latencies_ms]
        buckets = [(str(b), sum(1 for v in lat if v <= b)) for b in LATENCY_BUCKETS_S]
        buckets.append(("+Inf", len(lat)))
        h.add_metric([], buckets, sum(lat))
        yield h
        s = CounterMetricFamily("cumulus_sealed", "Purchases sealed into the outbox")
        s.add_metric([], c.stats.sealed)
        yield s
        u = CounterMetricFamily(
            "cumulus_recording_unavailable", "Baskets answered 'recording unavailable'"
        )
        u.add_metric([], c.stats.unavailable)
        yield u
        st = self.owner.last_status
        if st is not None:
            g = GaugeMetricFamily("cumulus_outbox_depth", "Envelopes waiting for HQ")
            g.add_metric([], st.waiting)
            yield g
            age = (
                0.0
                if st.oldest_waiting_ts is None
                else max(0.0, time.time() - st.oldest_waiting_ts)
            )
            a = GaugeMetricFamily(
                "cumulus_outbox_oldest_age_seconds", "Age of the oldest envelope waiting"
            )
            a.add_metric([], age)
            yield a
            dl = GaugeMetricFamily("cumulus_dead_letters", "Envelopes HQ rejected for good")
            dl.add_metric([], st.dead_letters)
            yield dl
        readers = GaugeMetricFamily(
            "cumulus_reader_state", "1 for the reader's current state", labels=["reader", "state"]
        )
        for name, snap in self.owner.readers().items():
            for state in ("connecting", "online", "offline", "error"):
                readers.add_metric([name, state], 1.0 if snap.get("state") == state else 0.0)
        yield readers
        sync = self.owner.sync()
        if sync:
            r = GaugeMetricFamily("cumulus_hq_reachable", "1 when the last sync attempt worked")
            r.add_metric([], 1.0 if sync.get("hq_reachable") else 0.0)
            yield r
            f = GaugeMetricFamily("cumulus_sync_consecutive_failures", "Failed attempts in a row")
            f.add_metric([], float(sync.get("consecutive_failures") or 0))
            yield f


class Metrics:
    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(
        self,
        checkout: Checkout,
        readers: StatsSource = dict,
        sync: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.checkout = checkout
        self.readers = readers
        self.sync = sync
        self.last_status: OutboxStatus | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    async def render(self) -> bytes:
        self.last_status = await self.checkout.outbox.status()
        return bytes(generate_latest(self.registry))
