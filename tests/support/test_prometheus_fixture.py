"""The reusable Prometheus fixture fails loudly, with install advice, when the binary is missing."""

from __future__ import annotations

import pytest

from tests.support.prometheus import prometheus_config, require_binary


def test_missing_binary_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_BIN", "/nonexistent/prometheus")
    with pytest.raises(pytest.fail.Exception, match="apt-get install prometheus"):
        require_binary("prometheus", env_var="PROMETHEUS_BIN")


def test_config_refuses_targets_outside_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        prometheus_config(["10.0.0.1:8000"])
    config = prometheus_config(["127.0.0.1:8000"], scrape_interval="2s", extra={"rule_files": ["r.yml"]})
    assert config["global"]["scrape_interval"] == "2s"
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]
    assert config["rule_files"] == ["r.yml"]
