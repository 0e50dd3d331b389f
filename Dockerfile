# The Touchstream worker image used by docker-compose.yml.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY producers producers
COPY streams streams
COPY sinks sinks
COPY touchstream touchstream
RUN pip install . && useradd --create-home --uid 10001 touchstream
USER touchstream
WORKDIR /home/touchstream
ENTRYPOINT ["touchstream"]
CMD ["worker"]
