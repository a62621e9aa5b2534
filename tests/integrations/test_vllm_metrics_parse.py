"""parse_metrics on hand-written pages in the vLLM exposition format (0.33 names and pre-0.11 names)."""

from __future__ import annotations

import math

import pytest

from bot.errors import PermanentError
from bot.integrations.vllm import HistogramSummary, bucket_quantile, parse_metrics

MODEL = "Qwen/Qwen3-8B"

# Shape of a vLLM 0.33 page with two data-parallel engines: prometheus_client text format, counters
# with _total and _created samples, request_success split by finished_reason, process metrics.
VLLM_033_PAGE = f"""\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{{generation="0"}} 12034.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 7.0
vllm:num_requests_running{{engine="1",model_name="{MODEL}"}} 5.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 3.0
vllm:num_requests_waiting{{engine="1",model_name="{MODEL}"}} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.33
vllm:kv_cache_usage_perc{{engine="1",model_name="{MODEL}"}} 0.41
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",model_name="{MODEL}"}} 4.0
vllm:num_preemptions_total{{engine="1",model_name="{MODEL}"}} 2.0
vllm:num_preemptions_created{{engine="0",model_name="{MODEL}"}} 1.7647e+09
vllm:num_preemptions_created{{engine="1",model_name="{MODEL}"}} 1.7647e+09
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{{engine="0",model_name="{MODEL}"}} 6000.0
vllm:prefix_cache_queries_total{{engine="1",model_name="{MODEL}"}} 4000.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{{engine="0",model_name="{MODEL}"}} 3000.0
vllm:prefix_cache_hits_total{{engine="1",model_name="{MODEL}"}} 1000.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{{engine="0",finished_reason="stop",model_name="{MODEL}"}} 90.0
vllm:request_success_total{{engine="0",finished_reason="length",model_name="{MODEL}"}} 8.0
vllm:request_success_total{{engine="0",finished_reason="abort",model_name="{MODEL}"}} 2.0
vllm:request_success_total{{engine="1",finished_reason="stop",model_name="{MODEL}"}} 50.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.1",model_name="{MODEL}"}} 50.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.25",model_name="{MODEL}"}} 80.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.5",model_name="{MODEL}"}} 100.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="{MODEL}"}} 100.0
vllm:time_to_first_token_seconds_count{{engine="0",model_name="{MODEL}"}} 100.0
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="{MODEL}"}} 15.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="0.1",model_name="{MODEL}"}} 50.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="0.25",model_name="{MODEL}"}} 80.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="0.5",model_name="{MODEL}"}} 100.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="+Inf",model_name="{MODEL}"}} 100.0
vllm:time_to_first_token_seconds_count{{engine="1",model_name="{MODEL}"}} 100.0
vllm:time_to_first_token_seconds_sum{{engine="1",model_name="{MODEL}"}} 15.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="1.0",model_name="{MODEL}"}} 10.0
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="2.0",model_name="{MODEL}"}} 30.0
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="+Inf",model_name="{MODEL}"}} 40.0
vllm:e2e_request_latency_seconds_count{{engine="0",model_name="{MODEL}"}} 40.0
vllm:e2e_request_latency_seconds_sum{{engine="0",model_name="{MODEL}"}} 70.0
"""

# A pre-0.11 page: the old KV-cache gauge name, no TYPE/HELP lines and no engine label.
LEGACY_PAGE = f"""\
vllm:num_requests_running{{model_name="{MODEL}"}} 2
vllm:num_requests_waiting{{model_name="{MODEL}"}} 9
vllm:gpu_cache_usage_perc{{model_name="{MODEL}"}} 0.97
vllm:num_preemptions_total{{model_name="{MODEL}"}} 31
vllm:time_per_output_token_seconds_count{{model_name="{MODEL}"}} 4
"""


def test_new_names_are_parsed_and_summed_over_engines() -> None:
    snap = parse_metrics(VLLM_033_PAGE, url="http://127.0.0.1:1")
    m = snap.model(MODEL)
    assert set(snap.models) == {MODEL}
    assert m.num_requests_running == 12
    assert m.num_requests_waiting == 4
    assert snap.num_requests_waiting == 4
    # KV usage reports the busiest engine, from the 0.33 gauge name.
    assert m.kv_cache_usage == pytest.approx(0.41)
    assert m.kv_cache_metric == "vllm:kv_cache_usage_perc"
    assert m.preemptions_total == 6
    assert m.prefix_cache_queries_total == 10_000
    assert m.prefix_cache_hit_ratio == pytest.approx(0.4)
    # request_success is summed over finished_reason and engines; _created samples are ignored.
    assert m.request_success_total == 150
    assert "vllm:num_preemptions_created" in snap.metric_names


def test_histograms_give_mean_and_bucket_p95() -> None:
    m = parse_metrics(VLLM_033_PAGE).model()
    assert m.ttft is not None and m.e2e_latency is not None
    assert m.ttft.count == 200
    assert m.ttft.mean == pytest.approx(0.15)
    # 95 % of 200 = rank 190, inside (0.25, 0.5] holding ranks 160..200: 0.25 + 0.25 * 30/40.
    assert m.ttft.p95 == pytest.approx(0.4375)
    # rank 38 of 40 falls in +Inf: report the highest finite bound, as histogram_quantile does.
    assert m.e2e_latency.p95 == pytest.approx(2.0)
    assert m.e2e_latency.mean == pytest.approx(1.75)


def test_legacy_gpu_cache_usage_name_is_accepted() -> None:
    m = parse_metrics(LEGACY_PAGE).model(MODEL)
    assert m.kv_cache_usage == pytest.approx(0.97)
    assert m.kv_cache_metric == "vllm:gpu_cache_usage_perc"
    assert m.num_requests_waiting == 9
    assert m.preemptions_total == 31
    assert m.ttft is None
    assert m.prefix_cache_hit_ratio is None


def test_new_name_wins_when_both_are_exported() -> None:
    page = LEGACY_PAGE + f'vllm:kv_cache_usage_perc{{model_name="{MODEL}"}} 0.5\n'
    m = parse_metrics(page).model(MODEL)
    assert m.kv_cache_usage == pytest.approx(0.5)
    assert m.kv_cache_metric == "vllm:kv_cache_usage_perc"


def test_models_are_kept_apart() -> None:
    page = (
        'vllm:num_requests_waiting{engine="0",model_name="a"} 2\n'
        'vllm:num_requests_waiting{engine="0",model_name="b"} 5\n'
    )
    snap = parse_metrics(page)
    assert snap.model("a").num_requests_waiting == 2
    assert snap.model("b").num_requests_waiting == 5
    assert snap.num_requests_waiting == 7
    with pytest.raises(PermanentError, match="2 models"):
        snap.model()
    with pytest.raises(PermanentError, match="no metrics"):
        snap.model("c")


def test_not_prometheus_text_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="not Prometheus text"):
        parse_metrics("<html>oops</html>\n", url="http://127.0.0.1:9")


def test_bucket_quantile_edges() -> None:
    inf = math.inf
    assert bucket_quantile(0.5, [(1.0, 0.0), (inf, 0.0)]) is None
    assert bucket_quantile(0.5, [(1.0, 4.0)]) is None  # no +Inf bucket: not a histogram
    assert bucket_quantile(0.5, [(1.0, 10.0), (2.0, 20.0), (inf, 20.0)]) == pytest.approx(1.0)
    assert bucket_quantile(0.25, [(1.0, 10.0), (2.0, 20.0), (inf, 20.0)]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        bucket_quantile(1.5, [(inf, 1.0)])


def test_histogram_since_is_the_window_between_two_scrapes() -> None:
    inf = math.inf
    before = HistogramSummary(count=10, sum=1.0, buckets=((0.1, 10.0), (1.0, 10.0), (inf, 10.0)))
    after = HistogramSummary(count=20, sum=9.0, buckets=((0.1, 10.0), (1.0, 20.0), (inf, 20.0)))
    window = after.since(before)
    assert window.count == 10
    assert window.mean == pytest.approx(0.8)
    assert window.p95 is not None and window.p95 > 0.1
    assert after.p95 is not None and window.p95 > after.p95
