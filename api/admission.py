"""Admission moved to core.admission: the sweep scheduler (core.sweeps), which runs in workers
too, admits each trial with the same checks as POST /v1/jobs. This name stays for imports."""
from core.admission import Rejection, admit, new_job, training_rows  # noqa: F401
