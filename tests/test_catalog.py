"""The service catalog: loading, one-line validation errors naming the field, first-match matching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.catalog import Catalog, load_catalog, model_label, parse_catalog
from bot.errors import ConfigError
from bot.settings import Settings

CATALOG = """
version: 1
services:
  - name: llama-pool
    match: {name: llama-pool}            # the inference extension's pool alerts
    namespace: serving
    decode: {name: llama-decode, kind: LeaderWorkerSet}
    inference_pool: llama-pool
  - name: by-model
    match: {model_name: {regex: "meta-llama/.*"}}
    namespace: models
    decode: llama
  - name: llm-d
    match: {service: llm-d, team: [sre, inference-platform]}
    namespace: llm-d
    decode: {name: vllm-decode, kind: Deployment}
    prefill: vllm-prefill
    epp: llm-d-epp
    model: meta-llama/Llama-3.1-8B-Instruct
    slack_channel: "#llm-d"
    pagerduty: {service: PABC123, routing_key_env: LLMD_PD_KEY}
    owners: [team-inference]
  - name: pods
    match: {pod: {regex: "ms-.*-decode-.*"}, job: {not_equals: kubelet}}
    namespace: ms
"""


def test_shipped_default_loads_and_has_no_entries() -> None:
    assert load_catalog(Settings().catalog).services == ()
    assert load_catalog(None).match({"service": "llm-d"}) is None


def test_each_matcher_kind_and_first_match_wins() -> None:
    catalog = parse_catalog(CATALOG, "c.yaml")
    assert catalog.match({"service": "llm-d", "team": "sre"}).name == "llm-d"  # type: ignore[union-attr]
    assert catalog.match({"service": "llm-d", "team": "inference-platform"}).name == "llm-d"  # type: ignore[union-attr]
    assert catalog.match({"service": "llm-d", "team": "web"}) is None  # `in` fails
    assert catalog.match({"service": "llm-d"}) is None  # a missing label reads as ""
    assert catalog.match({"name": "llama-pool"}).name == "llama-pool"  # type: ignore[union-attr]
    assert catalog.match({"model_name": "meta-llama/Llama-3.1-8B"}).name == "by-model"  # type: ignore[union-attr]
    assert catalog.match({"pod": "ms-a-decode-7f9", "job": "vllm"}).name == "pods"  # type: ignore[union-attr]
    assert catalog.match({"pod": "ms-a-decode-7f9", "job": "kubelet"}) is None  # not_equals
    assert catalog.match({"pod": "xms-a-decode-7f9", "job": "vllm"}) is None  # regexes are anchored
    # Both the model and the service entries match: the first in the file wins.
    both = {"model_name": "meta-llama/x", "service": "llm-d", "team": "sre"}
    assert catalog.match(both).name == "by-model"  # type: ignore[union-attr]


def test_an_entry_becomes_target_labels() -> None:
    catalog = parse_catalog(CATALOG, "c.yaml")
    entry = catalog.match({"service": "llm-d", "team": "sre"})
    assert entry is not None
    assert entry.target_labels() == {
        "namespace": "llm-d",
        "deployment": "vllm-decode",
        "workload_kind": "Deployment",
        "prefill_deployment": "vllm-prefill",
        "epp_deployment": "llm-d-epp",
        "model_name": "meta-llama/Llama-3.1-8B-Instruct",
    }
    assert entry.describe_match({"service": "llm-d", "team": "sre"}) == "service=llm-d, team=sre"
    pool = catalog.match({"name": "llama-pool"})
    assert pool is not None and pool.target_labels()["workload_kind"] == "LeaderWorkerSet"
    assert "deployment" not in parse_catalog(CATALOG).services[3].target_labels()


def _entry(extra: str) -> str:
    return f"version: 1\nservices:\n  - name: svc\n    match: {{service: x}}\n    namespace: ok\n{extra}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _entry("    decode: {name: x, kind: Job}\n"),
            "c.yaml:6: invalid service catalog: services[0] ('svc').decode.kind:",
        ),
        (
            _entry("    prefill: Not_A_Name\n"),
            "c.yaml:6: invalid service catalog: services[0] ('svc').prefill.name:",
        ),
        (
            _entry("    colour: red\n"),
            "c.yaml:6: invalid service catalog: services[0] ('svc').colour: Extra inputs",
        ),
        (_entry("    slack_channel: llm-d\n"), "services[0] ('svc').slack_channel: String should match"),
        (_entry("    pagerduty: {routing_key: abc}\n"), "services[0] ('svc').pagerduty.routing_key: Extra"),
        (
            _entry("").replace("namespace: ok", "namespace: Prod_NS"),
            "c.yaml:5: invalid service catalog: services[0] ('svc').namespace:",
        ),
        (
            _entry("").replace("{service: x}", "{service: {regex: '('}}"),
            "services[0] ('svc').match.service: invalid regex",
        ),
        (
            _entry("").replace("{service: x}", "{}"),
            "services[0] ('svc').match: Dictionary should have at least 1",
        ),
        (
            _entry("  - name: svc\n    match: {a: b}\n    namespace: ok\n"),
            "(top level): two services are named 'svc'",
        ),
        ("version: 2\nservices: []\n", "c.yaml:1: invalid service catalog: version:"),
        ("version: 1\nservices: [\n", "c.yaml:3:1: invalid service catalog: not valid YAML"),
        ("- a\n", "c.yaml: invalid service catalog: the catalog must be a YAML mapping"),
    ],
)
def test_validation_errors_are_one_line_naming_file_entry_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_catalog(text, "c.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert expected in message, message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read service catalog"):
        load_catalog(tmp_path / "missing.yaml")


def test_model_label() -> None:
    assert model_label("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama-llama-3.1-8b-instruct"
    assert isinstance(parse_catalog("version: 1\n"), Catalog)


def test_the_readme_catalog_example_is_valid() -> None:
    readme = Path("README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Service catalog: where an alert's target comes from") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    catalog = parse_catalog(example.group(1), "README.md")
    assert [e.name for e in catalog.services] == ["llm-d", "llama-by-model"]
    assert catalog.describe({"service": "llm-d", "team": "sre"}) == (
        "llm-d → llm-d/ms-decode (entry matched on service=llm-d, team=sre)"
    )
    model_only = {"model_name": "meta-llama/Llama-3.1-8B-Instruct", "pod": "ms-decode-0"}
    assert catalog.describe(model_only) == (
        "llama-by-model → llm-d (workload by discovery) (entry matched on model_name="
        "meta-llama/Llama-3.1-8B-Instruct, pod=ms-decode-0)"
    )
