# The llm-gateway image: the ext_proc server, the mock providers and the load
# generator of docker-compose.yml (Envoy runs from the official envoyproxy/envoy image).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg
WORKDIR /app

COPY pyproject.toml README.md ./
COPY ext_proc ./ext_proc
COPY gateway_tools ./gateway_tools
# The loadtest extra brings matplotlib for the load generator's plots.
RUN pip install ".[loadtest]" && rm -rf /app/build

COPY config ./config
RUN useradd --system --uid 10001 gateway && mkdir -p /reports && chown gateway /reports
USER gateway

EXPOSE 50051 9464
CMD ["llm-gateway", "serve", "--config", "/app/config/compose.yaml"]
