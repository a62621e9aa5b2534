"""Prometheus HTTP API (``prometheus-api-client``): instant and range PromQL queries as typed samples.

Error mapping (vendor errors never leave this module):

    connection refused / reset, timeouts, retries exhausted on 5xx   -> TransientError
    HTTP 5xx (503 query timeout or overload, 500)                    -> TransientError
    HTTP 400 bad_data (PromQL syntax), 422 execution error, 4xx      -> PermanentError
    a 200 body that is not the documented shape                      -> TransientError

Values arrive as strings ("0.33", "NaN", "+Inf") and are turned into floats here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from bot.errors import ConfigError, PermanentError, TransientError
from bot.settings import Settings

_STATUS = re.compile(r"HTTP Status Code (\d{3})")


@dataclass(frozen=True, eq=False)
class Sample:
    """One series of an instant vector: its labels (``__name__`` included when kept) and value."""

    labels: Mapping[str, str]
    value: float
    timestamp: float

    @property
    def name(self) -> str | None:
        """The metric name, if the query kept it."""
        return self.labels.get("__name__")


@dataclass(frozen=True, eq=False)
class Series:
    """One series of a range query: labels and (timestamp, value) points in time order."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def values(self) -> list[float]:
        """Just the values, oldest first."""
        return [v for _, v in self.points]


def _float(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError) as exc:
        raise TransientError(f"Prometheus returned a non-numeric value {raw!r}") from exc


def _labels(raw: Any) -> Mapping[str, str]:
    if not isinstance(raw, dict):
        raise TransientError(f"Prometheus returned labels of unexpected shape: {raw!r}")
    return MappingProxyType({str(k): str(v) for k, v in raw.items()})


def parse_instant(result: Any) -> list[Sample]:
    """Turn the ``data.result`` of an instant query (vector or scalar) into samples."""
    if (
        isinstance(result, list)
        and len(result) == 2
        and isinstance(result[0], int | float)
        and isinstance(result[1], str)
    ):
        # resultType scalar/string: [ts, "value"] rather than a list of series.
        return [Sample(labels=MappingProxyType({}), value=_float(result[1]), timestamp=float(result[0]))]
    if not isinstance(result, list):
        raise TransientError(f"Prometheus returned an unexpected result: {result!r:.200}")
    samples = []
    for item in result:
        try:
            ts, value = item["value"]
        except (KeyError, TypeError, ValueError) as exc:
            raise TransientError(f"Prometheus returned a sample without a value: {item!r:.200}") from exc
        samples.append(
            Sample(labels=_labels(item.get("metric", {})), value=_float(value), timestamp=float(ts))
        )
    return samples


def parse_range(result: Any) -> list[Series]:
    """Turn the ``data.result`` of a range query (matrix) into series."""
    if not isinstance(result, list):
        raise TransientError(f"Prometheus returned an unexpected matrix: {result!r:.200}")
    series = []
    for item in result:
        try:
            points = tuple((float(ts), _float(v)) for ts, v in item["values"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TransientError(f"Prometheus returned a series without values: {item!r:.200}") from exc
        series.append(Series(labels=_labels(item.get("metric", {})), points=points))
    return series


class PrometheusClient:
    """PromQL queries against one Prometheus, with a timeout and the project's error types."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retries: int = 1,
        headers: Mapping[str, str] | None = None,
        disable_ssl: bool = False,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"Prometheus URL {url!r} is not http(s)")
        self.url = url.rstrip("/")
        self.timeout = timeout
        # The library's default retries 3 times with 1 s backoff; keep retries short and let Celery
        # retry a TransientError with its own backoff instead.
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            backoff_factor=0.2,
            status_forcelist=(502, 503, 504),
            allowed_methods=("GET", "POST"),
        )
        # The library annotates timeout as int and headers as dict; requests accepts float and None.
        options: dict[str, Any] = {"headers": dict(headers) if headers else None, "timeout": timeout}
        self._client = PrometheusConnect(url=self.url, disable_ssl=disable_ssl, retry=retry, **options)

    @classmethod
    def from_settings(cls, settings: Settings) -> PrometheusClient:
        """A client for PROMETHEUS_URL; ConfigError when it is not configured."""
        if settings.prometheus_url is None:
            raise ConfigError("PROMETHEUS_URL is not set; live Prometheus checks are unavailable")
        return cls(
            settings.prometheus_url,
            timeout=settings.prometheus_timeout_seconds,
            retries=settings.prometheus_retries,
        )

    def close(self) -> None:
        """Release the HTTP session."""
        self._client.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _server_timeout(self) -> dict[str, str]:
        # Ask Prometheus to give up before our client does, so a slow query reads as a 503.
        # Prometheus durations take no fractions ("4.5s" is a 400): send whole milliseconds.
        return {"timeout": f"{max(100, int(self.timeout * 900))}ms"}

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrometheusApiClientException as exc:
            match = _STATUS.search(str(exc))
            status = int(match.group(1)) if match else None
            message = f"Prometheus {what}: {str(exc)[:400]}"
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                raise PermanentError(message) from exc
            raise TransientError(message) from exc
        except requests.exceptions.RequestException as exc:
            raise TransientError(f"Prometheus {what}: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a 200 whose body is not JSON (a proxy page)
            raise TransientError(f"Prometheus {what}: unreadable response: {exc}") from exc

    def query(self, promql: str, *, at: datetime | None = None) -> list[Sample]:
        """Instant query: one sample per series (a scalar result gives one unlabelled sample)."""
        params = self._server_timeout()
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        result = self._call("query", self._client.custom_query, promql, params=params)
        return parse_instant(result)

    def query_value(self, promql: str, *, at: datetime | None = None) -> float | None:
        """The single value of a query: None when empty; PermanentError when several series match."""
        samples = self.query(promql, at=at)
        if not samples:
            return None
        if len(samples) > 1:
            raise PermanentError(
                f"query {promql!r} returned {len(samples)} series; aggregate it (sum, max, ...)"
            )
        value = samples[0].value
        return None if math.isnan(value) else value

    def query_range(self, promql: str, start: datetime, end: datetime, step: str | float) -> list[Series]:
        """Range query over [start, end] at the given step (``"15s"`` or seconds)."""
        if end < start:
            raise PermanentError("query_range: end is before start")
        result = self._call(
            "query_range",
            self._client.custom_query_range,
            promql,
            start_time=start,
            end_time=end,
            step=str(step),
            params=self._server_timeout(),
        )
        return parse_range(result)

    def ready(self) -> bool:
        """Whether ``/-/ready`` answers 200 (never raises)."""
        try:
            response = requests.get(f"{self.url}/-/ready", timeout=self.timeout)
        except requests.exceptions.RequestException:
            return False
        return response.status_code == 200

    def values_by(self, promql: str, label: str) -> dict[str, float]:
        """An instant query as {value of ``label``: value}, e.g. ``sum by (model_name) (...)``."""
        out: dict[str, float] = {}
        for sample in self.query(promql):
            out[sample.labels.get(label, "")] = sample.value
        return out


def label_sets(samples: Sequence[Sample]) -> list[dict[str, str]]:
    """Plain dict copies of the samples' labels (handy in logs and tests)."""
    return [dict(s.labels) for s in samples]
