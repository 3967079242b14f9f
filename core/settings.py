"""One Settings object, environment variables prefixed CHAINRULE_; defaults give the embedded mode.

Where the settings come from, first found wins: the environment; the installation's env file
`<sys.prefix>/chainrule.env` (KEY=value lines; scripts/install.sh writes the repository's data
dir into the .venv's, the way pip reads a venv's pip.conf), so every `chainrule` run from that
environment, from any directory, uses the same data; the defaults below. The default data dir is
per user ($XDG_DATA_HOME/chainrule, else ~/.local/share/chainrule), never the working directory.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_PEPPER = "development-only-pepper"


INSTALLATION_ENV_FILE = Path(sys.prefix) / "chainrule.env"


def user_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "chainrule"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAINRULE_", extra="ignore", env_file=INSTALLATION_ENV_FILE)

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Field(default_factory=user_data_dir,
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
    max_inferred_classes: int = Field(50, ge=2, description="A target with more distinct values is not "
                                      "inferred as classes; task=classification takes it explicitly.")

    # GET /v1/jobs/{id}/events (server-sent events): the stream reads the job's rows this often,
    # sends a keep-alive comment after this much silence, and ends after max_s (the client resumes
    # with Last-Event-ID); each key holds at most this many open streams per API process
    events_poll_interval_s: float = 0.5
    events_keepalive_s: float = 15.0
    events_stream_max_s: float = 3600.0
    max_event_streams_per_key: int = 8

    # GET /v1/jobs/{id}/plots/{kind}.png: width and height in pixels (query parameters) within
    # these bounds, so a request's memory and drawing time stay bounded
    plot_min_px: int = 200
    plot_max_px: int = 2400

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
