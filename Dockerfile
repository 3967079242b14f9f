# One image for every chainrule service (api, migrate, worker-cpu, worker-gpu).
# torch from PyPI ships its CUDA runtime on linux/x86_64, so the same image trains on CPU
# and, given a GPU reservation (docker-compose.yml: worker-gpu), on an NVIDIA GPU.
# For a CPU-only image (about 1 GB smaller) build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi

COPY pyproject.toml ./
COPY chainrule ./chainrule
COPY core ./core
COPY engine ./engine
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
RUN pip install .

# an unprivileged user; /data is the artifact volume's mount point and owned by it, so a
# fresh named volume starts writable
RUN useradd --uid 10001 --create-home chainrule && mkdir -p /data/artifacts && chown -R chainrule /data
USER chainrule
ENV CHAINRULE_DATA_DIR=/data CHAINRULE_ARTIFACTS_DIR=/data/artifacts
VOLUME ["/data"]
EXPOSE 8000

# embedded mode by default (SQLite, server-less broker, one worker); compose overrides it
CMD ["chainrule", "serve", "--host", "0.0.0.0", "--port", "8000"]
