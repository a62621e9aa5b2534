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

    # --- Slack ----------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(None, description="Bot token (xoxb-…); Slack is off without.")
    slack_signing_secret: SecretStr | None = Field(None, description="Signing secret of the Slack app.")
    slack_api_url: str = Field(
        "https://slack.com/api/", description="Web API base URL (a proxy, or a loopback emulator in tests)."
    )
    slack_team_id: str | None = Field(None, description="If set, requests from other workspaces are refused.")
    slack_channel_p0: str = Field("#incidents-critical", description="Channel for P0 incidents.")
    slack_channel_p1: str = Field("#incidents-high", description="Channel for P1 incidents.")
    slack_channel_p2: str = Field("#incidents-medium", description="Channel for P2 incidents.")
    slack_channel_p3: str = Field("#incidents-low", description="Channel for P3 incidents.")
    slack_responders: str = Field(
        "", description="Comma-separated user (U…/W…) and user-group (S…) IDs allowed to ack/resolve/sev."
    )
    slack_approvers: str = Field(
        "", description="Comma-separated user and user-group IDs allowed to approve, run and roll back."
    )
    slack_usergroup_cache_seconds: int = Field(
        60, ge=0, description="How long user-group membership (usergroups.users.list) is cached."
    )
    slack_posts_per_second: float = Field(
        1.0, gt=0, description="Sustained chat.postMessage rate per channel, shared by all workers."
    )
    slack_post_burst: int = Field(3, ge=1, description="Posts a channel may burst above the sustained rate.")
    slack_storm_threshold: int = Field(
        5,
        ge=1,
        description="Incidents opened in one channel within the window before the digest is used.",
    )
    slack_storm_window_seconds: int = Field(60, ge=1, description="Alert-storm detection window.")
    slack_digest_interval_seconds: float = Field(
        2.0, gt=0, description="Digest messages are updated in place at most this often."
    )
    slack_response_url_prefixes: str = Field(
        "https://hooks.slack.com/",
        description="Comma-separated URL prefixes a response_url must start with before the bot posts to it.",
    )

    # --- PagerDuty ------------------------------------------------------------------------------
    pagerduty_routing_key: SecretStr | None = Field(
        None, description="Events API v2 integration key; paging is off without it."
    )
    pagerduty_routing_keys: SecretStr | None = Field(
        None, description="Per-severity routing keys overriding the default, e.g. `P0=key0,P1=key1`."
    )
    pagerduty_api_token: SecretStr | None = Field(
        None, description="REST API token, for acknowledging/resolving PagerDuty incidents from Slack."
    )
    pagerduty_from_email: str | None = Field(
        None, description="From address for REST calls when the Slack user has no mapped email."
    )
    pagerduty_user_emails: str = Field(
        "", description="Slack user id to PagerDuty login email, e.g. `U123=alice@example.com,U456=bob@…`."
    )
    pagerduty_webhook_secrets: SecretStr | None = Field(
        None, description="Webhook v3 signing secret(s), comma-separated while rotating."
    )
    pagerduty_events_url: str = Field("https://events.pagerduty.com", description="Events API base URL.")
    pagerduty_api_url: str = Field("https://api.pagerduty.com", description="REST API base URL.")
    pagerduty_ca_bundle: Path | None = Field(
        None, description="CA bundle to trust for the PagerDuty URLs (a proxy, or the test emulator)."
    )

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

    # --- Rollbacks (ChatOps) ---------------------------------------------------------------------
    rollback_approval_timeout_seconds: int = Field(
        900, ge=30, description="A rollback preview not approved within this long expires."
    )
    rollback_two_person_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces (production, P0/P1 services) where the requester may not approve their "
        "own rollback; comma-separated or a JSON list.",
    )
    rollback_rollout_timeout_seconds: int = Field(
        300, ge=5, le=600, description="How long a rollback waits for its rollout to complete."
    )
    rollback_verify_timeout_seconds: int = Field(
        120, ge=1, le=600, description="How long verification waits for every vLLM server's /health."
    )
    rollback_verify_promql: str | None = Field(
        None, description="Optional PromQL that must return a result after a rollback (needs PROMETHEUS_URL)."
    )
    rollback_verify_window_seconds: int = Field(
        120, ge=1, le=1800, description="How long the PromQL check may take to hold."
    )
    rollback_slack_channel: str | None = Field(
        None,
        description="Channel for rollbacks without an incident; default: the channel of the policy's "
        "default severity.",
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
    escalation_max_levels: int = Field(
        3,
        ge=1,
        le=20,
        description="Escalations per unacknowledged incident (one per escalation period of its level).",
    )
    timer_tick_seconds: float = Field(
        5.0, gt=0, le=60, description="How often beat runs the timer tick (escalations, reminders)."
    )
    timer_lease_seconds: int = Field(
        60,
        ge=5,
        le=3600,
        description="A claimed timer whose worker died is claimable again after this long.",
    )
    flap_threshold: int = Field(
        4,
        ge=1,
        description="A group with more state changes (fire or resolve) than this within the window flaps.",
    )
    flap_window_seconds: int = Field(
        3600, ge=60, description="Flapping window; a flapping group settles after this long without changes."
    )
    events_maxlen: int = Field(
        100_000, ge=100, description="Approximate length cap of the notification events stream."
    )

    # --- Service catalog and target discovery (issue 15) --------------------------------------------
    catalog: Path | None = Field(
        REPO_ROOT / "bot" / "policy" / "catalog.yaml",
        description="Service catalog YAML (label matchers -> namespace, workloads, pool, model, owners); "
        "the shipped default has no entries. Empty: no catalog.",
    )
    target_discovery: bool = Field(
        True, description="Discover a runbook's missing target from the cluster (pod owners, llm-d labels)."
    )
    target_discovery_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="Time budget of one target discovery (all its API calls together)."
    )

    # --- Redis high availability (Sentinel, replicated acknowledgement; README "Redis high availability") ---
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Sentinel addresses host:port (comma-separated or a JSON list); set: REDIS_URL is unused "
        "and state and broker follow the master Sentinel names (BROKER_URL, if set, still wins for Celery).",
    )
    redis_sentinel_master: str = Field("llm-bot", min_length=1, description="Master name Sentinel monitors.")
    redis_sentinel_password: SecretStr | None = Field(None, description="Password of the sentinels.")
    redis_password: SecretStr | None = Field(None, description="Password of the Redis master (Sentinel).")
    redis_db: int = Field(0, ge=0, le=15, description="Database number on the Sentinel-managed master.")
    redis_tls: bool = Field(False, description="Talk TLS to the sentinels and the master (Sentinel).")
    redis_tls_ca_file: Path | None = Field(None, description="CA bundle trusted for REDIS_TLS.")
    redis_failover_retries: int = Field(
        6, ge=0, le=30, description="Reconnect attempts (exponential back-off) when the master moves."
    )
    redis_min_replicas_ack: int = Field(
        0, ge=0, le=10, description="Webhook 2xx waits until this many replicas hold the message (WAIT)."
    )
    redis_wait_timeout_ms: int = Field(
        500, ge=1, le=10_000, description="Longest WAIT before the webhook answers 503 + Retry-After."
    )

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        """Sentinels come as `h1:26379,h2:26379` or a JSON array."""
        return cls._split_list(value)

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_host_port(cls, value: list[str]) -> list[str]:
        for item in value:
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"REDIS_SENTINELS entry {item!r} is not host:port")
        return value

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty without Sentinel."""
        return [(h, int(p)) for h, _, p in (item.rpartition(":") for item in self.redis_sentinels)]

    @field_validator(
        "vllm_endpoints", "kube_allowed_namespaces", "rollback_two_person_namespaces", mode="before"
    )
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

    @model_validator(mode="after")
    def _slack_is_whole(self) -> Settings:
        if (self.slack_bot_token is None) != (self.slack_signing_secret is None):
            raise ValueError("SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET must be set together")
        return self

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @property
    def effective_broker_url(self) -> str:
        """The broker URL Celery uses (kombu's `sentinel://` form under REDIS_SENTINELS)."""
        if self.broker_url or not self.redis_sentinels:
            return self.broker_url or self.redis_url
        auth = f":{self.redis_password.get_secret_value()}@" if self.redis_password else ""
        return ";".join(f"sentinel://{auth}{item}/{self.redis_db}" for item in self.redis_sentinels)

    @property
    def alertmanager_auth_configured(self) -> bool:
        """Whether any Alertmanager credential is set."""
        return self.alertmanager_token is not None or self.alertmanager_username is not None

    @property
    def reopen_window(self) -> timedelta:
        """REOPEN_WINDOW_SECONDS as a timedelta."""
        return timedelta(seconds=self.reopen_window_seconds)

    @property
    def slack_configured(self) -> bool:
        """Whether the Slack app (token and signing secret) is configured."""
        return self.slack_bot_token is not None and self.slack_signing_secret is not None

    @property
    def slack_channels(self) -> dict[str, str]:
        """Channel per severity value (P0..P3)."""
        return {
            "P0": self.slack_channel_p0,
            "P1": self.slack_channel_p1,
            "P2": self.slack_channel_p2,
            "P3": self.slack_channel_p3,
        }

    @property
    def slack_responder_ids(self) -> frozenset[str]:
        """User and user-group IDs of the responder group."""
        return _id_list(self.slack_responders)

    @property
    def slack_approver_ids(self) -> frozenset[str]:
        """User and user-group IDs of the approver group."""
        return _id_list(self.slack_approvers)

    @property
    def pagerduty_configured(self) -> bool:
        """Whether paging through the Events API is configured."""
        return self.pagerduty_routing_key is not None

    def pagerduty_routing_key_for(self, severity: str) -> str | None:
        """The routing key for incidents of this severity (P0..P3)."""
        if self.pagerduty_routing_keys is not None:
            key = _pairs(self.pagerduty_routing_keys.get_secret_value()).get(severity)
            if key:
                return key
        return self.pagerduty_routing_key.get_secret_value() if self.pagerduty_routing_key else None

    @property
    def pagerduty_email_by_slack_user(self) -> dict[str, str]:
        """Slack user id -> PagerDuty login email."""
        return _pairs(self.pagerduty_user_emails)

    @property
    def pagerduty_webhook_secret_list(self) -> list[str]:
        """Webhook signing secrets (several during rotation)."""
        if self.pagerduty_webhook_secrets is None:
            return []
        return [p.strip() for p in self.pagerduty_webhook_secrets.get_secret_value().split(",") if p.strip()]

    @property
    def slack_response_url_prefix_list(self) -> tuple[str, ...]:
        """Allowed response_url prefixes."""
        return tuple(p.strip() for p in self.slack_response_url_prefixes.split(",") if p.strip())

    @property
    def flap_window(self) -> timedelta:
        """FLAP_WINDOW_SECONDS as a timedelta."""
        return timedelta(seconds=self.flap_window_seconds)

    def secret_values(self) -> list[str]:
        """Plain values of every secret, for the log redaction filter."""
        values = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                plain = value.get_secret_value()
                values.append(plain)
                # lists of secrets ("a,b" or "P0=a,P1=b") also leak one item at a time
                for part in plain.split(","):
                    values.append(part.partition("=")[2] or part)
        return [v.strip() for v in values if v.strip()]


def _pairs(value: str) -> dict[str, str]:
    pairs = {}
    for part in value.split(","):
        key, sep, val = part.partition("=")
        if sep and key.strip() and val.strip():
            pairs[key.strip()] = val.strip()
    return pairs


def _id_list(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())


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
