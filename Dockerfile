# cdc-bridge: one image for every role (run, serve, the one-shot Alembic migrations).
#   docker build -t cdc-bridge .
#   docker run --rm -v "$PWD/erp.yaml:/etc/cdc-bridge/cdc-bridge.yaml:ro" \
#       -e ERP_DATABASE_URL -e BRIDGE_SECRET cdc-bridge run
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CDC_BRIDGE_CONFIG=/etc/cdc-bridge/cdc-bridge.yaml

WORKDIR /app
# The package, plus alembic.ini and migrations/ so that `alembic upgrade head` runs from /app.
COPY . /app
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin cdcbridge \
    && mkdir -p /etc/cdc-bridge

# Never run as root: the bridge needs no privileges in the container.
USER cdcbridge

EXPOSE 8081 9181
ENTRYPOINT ["cdc-bridge"]
CMD ["--help"]
