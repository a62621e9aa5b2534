"""Runtime configuration: the only module that reads the environment."""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every setting, read from environment variables (names are the upper-cased field names)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    # --- Redis / Celery -------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for state and dedup keys.")
    broker_url: str | None = Field(None, description="Celery broker; defaults to REDIS_URL.")
    key_prefix: str = Field("ib:", description="Prefix of every Redis key the bot writes.")
    celery_visibility_timeout: int = Field(
        900,
        ge=60,
        description="Seconds before an un-acked task is redelivered; longer than the longest task.",
    )
    enqueue_timeout_seconds: float = Field(
        2.0, gt=0, description="How long the webhook waits for the broker before answering 503."
    )
    dedup_ttl_seconds: int = Field(
        86_400, ge=60, description="How long a processed delivery's idempotency key is remembered."
    )

    # --- HTTP -----------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `incident-bot serve` binds.")
    port: int = Field(8080, ge=1, le=65535, description="Port `incident-bot serve` binds.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest webhook body accepted; larger gets 413."
    )

    # --- Kubernetes -----------------------------------------------------------------------------
    kubeconfig: str | None = Field(
        None,
        description="Kubeconfig path(s) (the standard KUBECONFIG; ':'-separated); default ~/.kube/config.",
    )
    kube_context: str | None = Field(None, description="Kubeconfig context to use; default current-context.")
    kube_config_mode: Literal["auto", "in-cluster", "kubeconfig"] = Field(
        "auto", description="auto: in-cluster service account, falling back to the kubeconfig."
    )
    kube_field_manager: str = Field(
        "llmd-incident-bot", min_length=1, max_length=128, description="fieldManager sent on every mutation."
    )
    kube_allowed_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces the bot may read and act in (comma-separated or a JSON list); empty: any.",
    )
    kube_request_timeout_seconds: float = Field(
        15.0, gt=0, le=300, description="Timeout of one Kubernetes API request."
    )

    # --- Alertmanager auth ----------------------------------------------------------------------
    alertmanager_token: SecretStr | None = Field(None, description="Bearer token Alertmanager sends.")
    alertmanager_username: str | None = Field(None, description="Basic-auth user Alertmanager sends.")
    alertmanager_password: SecretStr | None = Field(None, description="Basic-auth password.")
    alertmanager_allow_anonymous: bool = Field(
        False, description="Accept unauthenticated webhooks (never in production)."
    )

    # --- Prometheus -----------------------------------------------------------------------------
    prometheus_url: str | None = Field(
        None, description="Prometheus HTTP API base URL; unset means live PromQL checks are unavailable."
    )
    prometheus_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Client timeout of one Prometheus API request."
    )
    prometheus_retries: int = Field(
        1, ge=0, le=5, description="Retries of a Prometheus request on connection errors and 5xx."
    )

    # --- vLLM serving tier ----------------------------------------------------------------------
    vllm_endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Static vLLM server base URLs, comma-separated or a JSON list.",
    )
    vllm_api_key: SecretStr | None = Field(None, description="Bearer key the vLLM servers require on /v1.")
    vllm_connect_timeout_seconds: float = Field(2.0, gt=0, le=60, description="TCP connect timeout.")
    vllm_read_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="Read timeout of one vLLM HTTP request (and of each stream chunk)."
    )
    vllm_warmup_timeout_seconds: float = Field(
        60.0, gt=0, le=1800, description="Overall deadline of one warmup completion."
    )
    vllm_max_concurrency: int = Field(
        16, ge=1, le=256, description="Most vLLM servers contacted at once when fanning out."
    )
    vllm_warmup_max_tokens: int = Field(4, ge=1, le=64, description="max_tokens of the warmup completion.")

    # --- Runbooks ------------------------------------------------------------------------------
    runbook_auto_run: bool = Field(
        True, description="Start matching runbooks automatically when an incident opens or changes."
    )
    runbook_auto_dry_run: bool = Field(
        False, description="Automatic runs are dry runs (every change a server-side dry run)."
    )
    runbook_max_replicas: int = Field(
        16, ge=1, le=1000, description="No runbook scales a Deployment above this, whatever it asks."
    )
    runbook_max_pod_delete_fraction: float = Field(
        0.5, gt=0, le=1, description="Largest fraction of a Deployment's pods one step may delete."
    )
    runbook_cooldown_seconds: int = Field(
        300, ge=0, description="After an action on a target, the same action on it waits this long."
    )
    runbook_max_actions: int = Field(
        10, ge=1, description="Circuit breaker: at most this many changes in RUNBOOK_ACTION_WINDOW_SECONDS."
    )
    runbook_action_window_seconds: int = Field(
        900, ge=1, description="Window of the circuit breaker (all workers, all targets)."
    )
    runbook_approval_timeout_seconds: int = Field(
        1800, ge=10, description="How long a step with requires_approval waits for a decision."
    )
    runbook_recheck_prometheus: bool = Field(
        True, description="Before a change, also re-evaluate the alert's expression (needs PROMETHEUS_URL)."
    )

    # --- Logging --------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- Files ----------------------------------------------------------------------------------
    runbooks_dir: Path = REPO_ROOT / "runbooks"
    templates_dir: Path = REPO_ROOT / "templates"
    severity_policy: Path = Field(
        REPO_ROOT / "bot" / "policy" / "severity.yaml",
        description="Severity policy YAML (levels, signals, rules); the shipped default is bot/policy/.",
    )

    # --- Incident lifecycle ---------------------------------------------------------------------
    reopen_window_seconds: int = Field(
        1800,
        ge=0,
        description="How long after resolution a firing alert reopens the incident instead of a new one.",
    )

    @field_validator("vllm_endpoints", "kube_allowed_namespaces", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """Lists come as `a,b,c` or a JSON array."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("vllm_endpoints")
    @classmethod
    def _endpoints_are_http(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"VLLM_ENDPOINTS entry {url!r} is not an http(s) URL")
        return [url.rstrip("/") for url in value]

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus_is_http(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"PROMETHEUS_URL {value!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _basic_auth_is_whole(self) -> Settings:
        if (self.alertmanager_username is None) != (self.alertmanager_password is None):
            raise ValueError("ALERTMANAGER_USERNAME and ALERTMANAGER_PASSWORD must be set together")
        return self

    @property
    def effective_broker_url(self) -> str:
        """The broker URL Celery uses."""
        return self.broker_url or self.redis_url

    @property
    def alertmanager_auth_configured(self) -> bool:
        """Whether any Alertmanager credential is set."""
        return self.alertmanager_token is not None or self.alertmanager_username is not None

    @property
    def reopen_window(self) -> timedelta:
        """REOPEN_WINDOW_SECONDS as a timedelta."""
        return timedelta(seconds=self.reopen_window_seconds)

    def secret_values(self) -> list[str]:
        """Plain values of every secret, for the log redaction filter."""
        values = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        return values


def load_settings() -> Settings:
    """Read settings from the environment, turning validation errors into a ConfigError."""
    try:
        return Settings()
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()
