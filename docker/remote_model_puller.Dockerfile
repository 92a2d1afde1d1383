# syntax=docker/dockerfile:1
# remote_model_puller: bucket -> local model volume (global service, port 8001).
# Build from the repository root (the context must hold pyproject.toml, uv.lock, README.md, services/):
#   docker build -f docker/remote_model_puller.Dockerfile \
#     -t "$MODELFLEET_REGISTRY/modelfleet-remote-model-puller:$MODELFLEET_VERSION" .
# Only the runtime dependencies locked in uv.lock are installed: no TensorFlow (the "serving" extra is
# never exported), no fleetctl (the "cli" extra: typer, rich), no dev tools. Runs as the fixed UID/GID 10001 with umask 002 so the stock tfserving
# container can read everything written to the shared model volume.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
# Dependencies first: this layer only changes when the lock does.
COPY pyproject.toml uv.lock ./
RUN uv export --frozen --no-dev --no-emit-project --format requirements.txt -o /tmp/requirements.txt \
    && python -m venv /opt/venv \
    && uv pip install --python /opt/venv/bin/python --require-hashes -r /tmp/requirements.txt
COPY README.md ./
COPY services ./services
RUN printf 'hatchling==1.27.0\n' > /tmp/build-constraints.txt \
    && uv build --wheel --out-dir /tmp/dist --build-constraints /tmp/build-constraints.txt \
    && uv pip install --python /opt/venv/bin/python --no-deps /tmp/dist/*.whl

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="modelfleet remote_model_puller" \
      org.opencontainers.image.description="Pulls complete, verified SavedModel versions from GCS to the node's model volume"
RUN groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin fleet \
    && install -d -o 10001 -g 10001 -m 2775 /app /local_saved_models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLEET_PORT=8001 \
    FLEET_STATE_DIR=/app \
    FLEET_LOG_FORMAT=json \
    LOCAL_MODEL_DIRECTORY=/local_saved_models
WORKDIR /app
USER 10001:10001
EXPOSE 8001
# umask 002: files on the shared volume stay group-readable/writable (Docker has no umask setting).
ENTRYPOINT ["/bin/sh", "-c", "umask 002 && exec \"$@\"", "modelfleet"]
CMD ["python", "-m", "services.remote_model_puller"]
# The project's own healthcheck (no curl in the image); it probes 127.0.0.1:$FLEET_PORT/healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "services.common.healthcheck"]
