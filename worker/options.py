"""What `chainrule worker` hands its worker processes through the environment (children inherit
it). A module of its own, without torch, so the CLI can import it cheaply."""
DEVICE_ENV = "CHAINRULE_WORKER_DEVICE"        # auto | cpu | cuda
THREADS_ENV = "CHAINRULE_WORKER_THREADS"      # torch intra-op threads per worker process
ALIVE_FILE_ENV = "CHAINRULE_WORKER_ALIVE_FILE"  # touched every sweep, for the container healthcheck
DEVICE_CHOICES = ("auto", "cpu", "cuda")
