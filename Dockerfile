# The BidBridge server image used by docker-compose.yml (services server1 and server2).
# janus-tools brings janus-pp-rec, which turns Janus's recordings into WebM without transcoding.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends janus-tools \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY crypto ./crypto
COPY schemas ./schemas
COPY server ./server
COPY room_client ./room_client
RUN pip install --no-cache-dir . \
    && useradd --uid 1000 --create-home bidbridge \
    && mkdir -p /data/blobs /recordings \
    && chown -R bidbridge:bidbridge /data /recordings

USER bidbridge
EXPOSE 8080
ENTRYPOINT ["bidbridge"]
CMD ["serve", "--data", "/data", "--host", "0.0.0.0", "--port", "8080"]
