"""The request tally of one process against prometheus-client's own counter and histogram."""

from __future__ import annotations

import re
import threading

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import LATENCY_BUCKETS, Metrics, PrometheusRequests, RequestTally

CREATED = re.compile(r"(_created\{[^}]*\}) \S+")

requests = st.lists(
    st.tuples(
        st.sampled_from(["GET", "POST", "_OTHER"]),
        st.sampled_from(["/tensor/ops", "/health", "unmatched"]),
        st.sampled_from([200, 404, 413, 500]),
        # the bounds themselves (a value on a bound falls in its bucket), and any other
        st.sampled_from(LATENCY_BUCKETS) | st.floats(0, 120, allow_nan=False),
    ),
    max_size=60,
)


@given(requests)
def test_the_tally_writes_what_prometheus_client_writes(answered: list) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally, reference = RequestTally(ours), PrometheusRequests(theirs)
    for request in answered:
        tally.count(*request)
        reference.count(*request)
    # Byte for byte, but for the time each series was created.
    written = CREATED.sub(r"\1 T", generate_latest(ours).decode())
    assert written == CREATED.sub(r"\1 T", generate_latest(theirs).decode())


def test_one_process_counts_in_its_tally(monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics()
    assert isinstance(metrics.answered, RequestTally)
    for seconds in (0.0004, 0.001, 0.003, 7.0):
        metrics.count_request("POST", "/tensor/ops", 200, seconds)
    metrics.count_request("BREW", "/health", 405, 0.0)
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    counts = {
        (s.labels["method"], s.labels["status"]): s.value
        for s in families["torchlab_requests"].samples
        if s.name == "torchlab_requests_total"
    }
    assert counts == {("POST", "200"): 4, ("_OTHER", "405"): 1}
    buckets = {
        s.labels["le"]: s.value
        for s in families["torchlab_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["method"] == "POST"
    }
    assert (buckets["0.001"], buckets["0.005"], buckets["5.0"], buckets["+Inf"]) == (2, 3, 3, 4)


def test_a_scrape_while_requests_are_counted_reads_whole_series() -> None:
    registry = CollectorRegistry()
    tally = RequestTally(registry)
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            for family in text_string_to_metric_families(generate_latest(registry).decode()):
                for sample in family.samples:
                    assert sample.value >= 0

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for i in range(20000):  # new series appear while the scraper reads
            tally.count("GET", f"/r{i % 300}", 200 + i % 7, 0.001)
    finally:
        done.set()
        scraper.join()
    text = generate_latest(registry).decode()
    total = sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "torchlab_requests_total"
    )
    assert total == 20000
