"""One Settings object, environment variables prefixed CHAINRULE_; defaults give the embedded mode."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_PEPPER = "development-only-pepper"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAINRULE_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".chainrule",
                           description="Holds the SQLite file, the embedded broker's store and artifacts.")
    database_url: str | None = Field(None, description="Absent: SQLite under data_dir.")
    broker_url: str | None = Field(None, description="Absent: a server-less filesystem transport under data_dir.")
    artifacts_dir: Path | None = Field(None, description="Absent: data_dir/artifacts.")
    key_pepper: SecretStr = SecretStr(PLACEHOLDER_PEPPER)  # HMAC key for stored API-key hashes

    # limits: each exceeded limit is a clear 4xx
    max_upload_bytes: int = 100 * 1024 * 1024
    max_rows: int = 1_000_000
    max_features: int = 1_000_000          # values per sample (F, or C*H*W)
    max_parameters: int = 20_000_000       # trainable parameters per model
    max_compute_per_job: int = 500_000_000  # epochs x training samples
    max_concurrent_jobs: int = 4           # queued + running per key
    max_predict_rows: int = 10_000
    max_sweep_trials: int = 500            # trials per sweep (a grid's points included)
    max_active_sweeps: int = 4             # running sweeps per key; their trials count as its jobs

    # worker liveness: a running job whose heartbeat is older than heartbeat_timeout_s is retried
    # from its last checkpoint (up to max_attempts in all) or failed with a reason
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 30.0
    max_attempts: int = 3
    progress_interval_s: float = 1.0       # progress rows are written at most this often
    cancel_poll_interval_s: float = 0.5
    sweep_interval_s: float = 5.0          # the sweeper (core.sweeper) in every API and worker process
    resend_after_s: float = 10.0           # a queued job not picked up after this is sent again
    broker_poll_interval_s: float = 0.05   # embedded transport only

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'chainrule.sqlite'}"
        if self.broker_url is None:
            self.broker_url = "filesystem://"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.data_dir / "artifacts"
        if self.environment == "production" and self.key_pepper.get_secret_value() == PLACEHOLDER_PEPPER:
            raise ValueError("CHAINRULE_KEY_PEPPER is the development placeholder; set a secret in production")
        return self

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url == "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"


@lru_cache
def get_settings() -> Settings:
    return Settings()
