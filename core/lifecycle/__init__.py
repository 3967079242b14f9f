"""The job lifecycle: the statuses (status.py) and every move between them, in one place: into the
queue (queueing.py: submit under the key's lock, dispatch) and on a worker (running.py: claim,
heartbeats, finish, release, cancel, recovery of a lost worker). Import them from here.

    submit ─▶ queued ──claim──▶ running ──finish──▶ succeeded | failed | cancelled
                │ ▲               │
         cancel │ └──release──────┤  worker shutdown: back to the queue, no attempt spent
                ▼    requeue──────┤  lost worker, attempts left: resume from the checkpoint
            cancelled   fail_lost─┘  lost worker, no attempts left: failed (worker_lost)

    reject ─▶ failed                 a sweep's trial whose drawn point does not admit: never sent

The row is the job; a broker message is only a wake-up call carrying its id. Every move is
one conditional UPDATE that re-checks the state it starts from, so two processes acting on
one job at once never both win: the one whose UPDATE matches the row acts, the other sees
rowcount 0. A running job's writes are fenced on (id, running, attempt): a worker whose job
was taken from it can no longer touch the row, and learns so at its next heartbeat.
Every move into a final status also writes the job's webhook event (core.webhooks.outbox) in the
same transaction, so the event exists exactly when the move is committed.

`dispatch` is the one way a job reaches the broker (after submit, release and requeue, and
for the reconciler's resends). It claims the send by a compare-and-set on `sent_at`, sends, and
on a broker error puts `sent_at` back, so the next sweep retries at once.

## The plan for a worker that dies mid-task
The database lease is the one recovery mechanism. A running job's worker refreshes
`heartbeat_at` every `heartbeat_interval_s`; the reconciler (core.reconciler, a thread in every API
and worker process) finds a running job whose heartbeat is older than `heartbeat_timeout_s`
and `recover_lost` requeues it from its last checkpoint (attempts < max_attempts) or fails it
as `worker_lost` with the host, the last heartbeat and the attempts in its message. This
works the same on every broker, including the embedded one, which has no redelivery at all.

Celery's redelivery is not part of the plan. `task_acks_late` stays on for another reason:
with early acks a solo worker busy with a long job would already hold the next message,
prefetched, which then waits behind that job while other workers idle. The unacked message
of a worker that died comes back from Redis only after the visibility timeout (hours), long
after the reconciler has dealt with the job, and its claim is then a no-op.
`task_reject_on_worker_lost` is off: it concerns prefork children, and our workers are solo.
"""
from .queueing import (BROKER_BACKOFF_S, ConcurrencyLimit, NoWorker, add_queued, dispatch, lock_owner, reject,
                       send_once, submit)
from .running import (Claim, beat, cancel, cancel_queued, claim, fenced, finish, lost_worker_message, recover_lost,
                      release)
from .status import ACTIVE, FINAL, JobStatus

__all__ = ["JobStatus", "ACTIVE", "FINAL", "BROKER_BACKOFF_S", "ConcurrencyLimit", "NoWorker", "lock_owner",
           "add_queued", "submit", "reject", "dispatch", "send_once", "Claim", "fenced", "claim", "beat", "finish",
           "release", "cancel", "cancel_queued", "lost_worker_message", "recover_lost"]
