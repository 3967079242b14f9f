"""What `chainrule worker` hands its worker processes through the environment (children inherit
it). A module of its own, without torch, so the CLI can import it cheaply."""
import socket
from pathlib import Path

DEVICE_ENV = "CHAINRULE_WORKER_DEVICE"        # auto | cpu | cuda
THREADS_ENV = "CHAINRULE_WORKER_THREADS"      # torch intra-op threads per worker process
ALIVE_FILE_ENV = "CHAINRULE_WORKER_ALIVE_FILE"  # touched every reconciler pass, for the container healthcheck
QUEUES_ENV = "CHAINRULE_WORKER_QUEUES"        # the broker queues it consumes, comma-separated
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def alive_file(data_dir: Path) -> Path:
    """Where a worker proves it is alive, unless ALIVE_FILE_ENV says otherwise: under the data dir and
    named for the host (a container's own name), so instances sharing a machine or a volume never
    vouch for each other. docker-compose.yml's healthcheck reads the same path."""
    return data_dir / "run" / f"worker-{socket.gethostname()}.alive"
