"""One Settings object, environment variables prefixed CHAINRULE_; defaults give the embedded mode.

Where the settings come from, first found wins: the environment; the installation's env file
`<sys.prefix>/chainrule.env` (KEY=value lines; scripts/install.sh writes the repository's data
dir into the .venv's, the way pip reads a venv's pip.conf), so every `chainrule` run from that
environment, from any directory, uses the same data; the defaults below. The default data dir is
per user ($XDG_DATA_HOME/chainrule, else ~/.local/share/chainrule), never the working directory.
"""
from __future__ import annotations

import os
import secrets
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_PEPPER = "development-only-pepper"   # an old default: refused in production
PEPPER_FILE = "key_pepper"


def data_dir_pepper(data_dir: Path) -> str:
    """The pepper generated into the data dir on first start (0600), for a deployment that sets none:
    one per installation, so two development installs never share API-key hashes. Written under a
    temporary name and linked into place, so processes starting together agree on one."""
    path = data_dir / PEPPER_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{PEPPER_FILE}.")   # created 0600
        try:
            os.write(fd, secrets.token_urlsafe(48).encode())
            os.close(fd)
            os.link(tmp, path)
        except FileExistsError:
            pass                                  # another process made it first: use theirs
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


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
    broker_dir: Path | None = Field(None, description="The embedded broker's store. Absent: data_dir/broker.")
    key_pepper: SecretStr | None = Field(None, description="HMAC key of stored API-key hashes. Absent: "
                                         "required in production; in development generated into data_dir.")

    # limits: each exceeded limit is a clear 4xx
    max_upload_bytes: int = 100 * 1024 * 1024
    max_rows: int = 1_000_000
    max_features: int = 1_000_000          # values per sample (F, or C*H*W)
    max_parameters: int = 20_000_000       # trainable parameters per model
    max_compute_per_job: int = 500_000_000  # epochs x training samples
    max_concurrent_jobs: int = 4           # queued + running per key
    max_storage_bytes_per_key: int = 10 * 1024**3   # stored datasets and weights per key
    max_predict_rows: int = 10_000
    max_sweep_trials: int = 500            # trials per sweep (a grid's points included)
    max_active_sweeps: int = 4             # running sweeps per key; their trials count as its jobs
    max_inferred_classes: int = Field(50, ge=2, description="A target with more distinct values is not "
                                      "inferred as classes; task=classification takes it explicitly.")
    # text datasets: a language_model's tokens (byte: the file's bytes; char: its characters), the
    # distinct characters of a char tokenizer (past it: tokenizer=byte), the ids per row of a
    # sequence_classification dataset (its max_length), and every id of an uploaded NPZ of ids
    max_text_tokens: int = Field(50_000_000, ge=2, le=2**31 - 1)   # n_rows is a 32-bit column
    max_char_vocab: int = Field(1024, ge=1)
    max_sequence_length: int = Field(1024, ge=1)
    max_vocab_size: int = Field(1_000_000, ge=2, le=2**31 - 1)
    max_context_length: int = Field(4096, ge=1)       # a language model's window, in tokens
    max_generate_tokens: int = Field(2000, ge=1)      # new tokens per generate request
    max_attention_cells: int = Field(1_000_000, ge=1)  # layers x heads x T x T numbers per attention-map answer

    # GET /v1/jobs/{id}/events (server-sent events): the stream reads the job's rows this often,
    # sends a keep-alive comment after this much silence, and ends after max_s (the client resumes
    # with Last-Event-ID); each key holds at most this many open streams per API process
    events_poll_interval_s: float = 0.5
    events_keepalive_s: float = 15.0
    events_stream_max_s: float = 3600.0
    max_event_streams_per_key: int = 8

    # run the engine's norm formulas (batchnorm, layernorm) through torch.compile in training: faster
    # steps on the CPU after a cold start of seconds per formula and shape (bench/engine_vs_torch.py
    # has both figures); needs a C++ compiler on the worker, else the formulas run eagerly
    engine_compile: bool = False

    # memory a job may need in a training step (activations x batch_size, parameters with their
    # gradients and optimizer state, the data), as engine.memory estimates it at submit
    max_job_memory_bytes: int = 4 * 1024**3
    predict_memory_bytes: int = 256 * 1024**2   # predict runs in chunks of rows that fit this
    max_json_bytes: int = 16 * 1024 * 1024  # any request body but an upload's (a job spec is kilobytes)
    # `limits` notation, ";" between several; empty: no limit. Per key, and per client address
    # (which also bounds guessing keys); 429 with Retry-After past them
    rate_limit_per_key: str = "100/second"       # one window each: a Redis round trip per request apiece
    rate_limit_per_address: str = "200/second"

    # load shedding, per API process: past max_requests_in_flight a request is a 503 "busy" at once;
    # one waits at most db_pool_timeout_s for a pooled connection (db_pool_size + db_max_overflow of
    # them), then is a 503 "busy" too, never "unavailable" (that is an outage)
    max_requests_in_flight: int = Field(64, ge=1)
    db_pool_size: int = Field(20, ge=1)
    db_max_overflow: int = Field(20, ge=0)
    db_pool_timeout_s: float = Field(0.5, gt=0)
    busy_retry_after_s: int = Field(1, ge=1)
    # a disk (data_dir's) with less free space than this makes /readyz not ready; a write that
    # finds it full is a 507 naming data_dir, and a job whose checkpoint cannot be written fails disk_full
    min_free_disk_bytes: int = Field(100 * 1024**2, ge=0)
    # slow clients: the request line and headers must arrive within header_timeout_s, and each piece
    # of a body within body_timeout_s of the last (else 408 and the connection is closed); a client
    # address holds at most max_connections_per_address connections to one API process
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    max_connections_per_address: int = Field(64, ge=1)
    # open event streams per API process, all keys together (503 busy past it)
    max_event_streams: int = Field(512, ge=1)

    # GET /v1/jobs/{id}/plots/{kind}.png: width and height in pixels (query parameters) within
    # these bounds, so a request's memory and drawing time stay bounded
    plot_min_px: int = 200
    plot_max_px: int = 2400
    # POST /v1/gradcheck runs in the API process, synchronously, in float64, bounded by these: the
    # network's parameters, the batch, the coordinates checked per tensor, the batch's activations
    # (engine.memory's estimate) and the wall time (estimated from one forward before it starts)
    gradcheck_max_parameters: int = 100_000
    gradcheck_max_batch_size: int = 64
    gradcheck_max_coordinates: int = 256
    gradcheck_max_memory_bytes: int = 256 * 1024**2
    gradcheck_time_limit_s: float = 10.0
    gradcheck_concurrency: int = Field(2, ge=1, description="Checks running at once per API process (429 past it).")
    # POST /v1/jobs/{id}/landscape runs on a worker, bounded by these: points on the line, points per
    # side of the surface, training rows evaluated, Hessian-vector products per end of the spectrum (and
    # Lanczos steps per density vector), Hutchinson vectors
    landscape_max_points: int = 201
    landscape_max_grid: int = 51
    landscape_max_samples: int = 4096
    hessian_max_iterations: int = 500
    hessian_max_trace_samples: int = 500
    max_active_landscapes_per_key: int = 2   # queued + running per key

    # worker liveness: a running job whose heartbeat is older than heartbeat_timeout_s is retried
    # from its last checkpoint (up to max_attempts in all) or failed with a reason
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 30.0
    max_attempts: int = 3
    progress_interval_s: float = 1.0       # progress rows are written at most this often
    cancel_poll_interval_s: float = 0.5
    reconcile_interval_s: float = 5.0          # the reconciler (core.reconciler) in every API and worker process
    resend_after_s: float = 10.0           # a queued job not picked up after this is sent again
    max_resend_interval_s: float = 60.0    # ...growing with its wait up to this (a database back up is
                                           # noticed within it, whatever the job's age)
    worker_wait_s: float = 600.0           # a queued job no live worker can take (a cuda job and no GPU
                                           # worker) fails after this; 0: refused at submit (409)
    database_patience_s: float = 120.0     # a worker retries the database this long (backing off)
                                           # before it gives a message or an outcome up
    broker_poll_interval_s: float = 0.05   # embedded transport only

    # data parallelism (docs/distributed.md): a job's `distributed.processes` is at most max_processes;
    # a worker host runs at most rank_slots rank processes at once (reserved in SQL, all or nothing);
    # ranks rendezvous at the TCPStore on distributed_store_host (the address other hosts reach this
    # worker at); init_process_group waits distributed_init_timeout_s; a rank that dies restarts all
    # from the last checkpoint up to distributed_max_restarts times
    max_processes: int = Field(4, ge=1, le=1024)
    rank_slots: int = Field(4, ge=1, le=1024)
    distributed_bucket_bytes: int = Field(25 * 2**20, ge=1)
    distributed_store_host: str = "127.0.0.1"
    distributed_init_timeout_s: float = Field(60.0, gt=0)
    distributed_max_restarts: int = Field(2, ge=0)
    # across hosts: rank_host names this worker's host in rank_slots (absent: the machine's host name);
    # a rank sent to another worker waits this long for a slot there, and its supervisor this long for
    # the task to be taken; a remote rank whose heartbeat is older than distributed_remote_stale_s is dead
    rank_host: str | None = Field(None, max_length=200)
    distributed_remote_wait_s: float = Field(60.0, gt=0)
    distributed_remote_stale_s: float = Field(5.0, gt=0)

    # webhooks (core.webhooks): subscriptions per key; an attempt's timeout; attempts per delivery,
    # the n-th retry after webhook_retry_base_s * 2**(n-1) seconds, capped at webhook_retry_max_s;
    # loopback, private and link-local targets are refused unless allowed (SSRF)
    max_webhooks_per_key: int = Field(20, ge=1)
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1, le=50)
    webhook_retry_base_s: float = Field(30.0, gt=0)
    webhook_retry_max_s: float = Field(3600.0, gt=0)
    webhook_allow_private_targets: bool = False

    @field_validator("rate_limit_per_key", "rate_limit_per_address")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        if value.strip():   # parse_many raises a ValueError naming what it cannot read
            parse_many(value)
        return value.strip()

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'chainrule.sqlite'}"
        if self.broker_url is None:
            self.broker_url = "filesystem://"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.data_dir / "artifacts"
        if self.broker_dir is None:
            self.broker_dir = self.data_dir / "broker"
        if self.environment == "production" and (
                self.key_pepper is None or self.key_pepper.get_secret_value() in ("", PLACEHOLDER_PEPPER)):
            raise ValueError("CHAINRULE_KEY_PEPPER is not set, or is the old development placeholder; set a long "
                             "random secret in production")
        if self.key_pepper is None:
            self.key_pepper = SecretStr(data_dir_pepper(self.data_dir))
        return self

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url == "filesystem://"


@lru_cache
def get_settings() -> Settings:
    return Settings()
