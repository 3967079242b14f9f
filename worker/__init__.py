"""The Celery worker: claims a job by id, trains it with engine.train.fit, stores what comes back.

Imports engine/ and the persistence layer (chainrule.*), never FastAPI or api/.
`worker.app` is the Celery app; `chainrule worker` (chainrule.cli) starts it with pool solo,
one training job per process.
"""
