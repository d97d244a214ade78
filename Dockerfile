# syntax=docker/dockerfile:1
# One image for every Homeward process: `homeward api` (default), `homeward ingest`,
# `homeward ticker`. docker-compose.yml runs all three plus Redis and Mosquitto.

# --- build: install the project and its dependencies into a venv ------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/homeward
WORKDIR /src
COPY . .
# The project depends on tzdata: slim images may carry no /usr/share/zoneinfo.
RUN /opt/homeward/bin/pip install .

# --- runtime: the venv only, run as an unprivileged user --------------------------------
FROM python:3.11-slim
ENV PATH=/opt/homeward/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOMEWARD_DATA_DIR=/data \
    HOMEWARD_HTTP_HOST=0.0.0.0 \
    HOMEWARD_HTTP_PORT=8000
RUN groupadd --system --gid 10001 homeward \
    && useradd --system --uid 10001 --gid homeward --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin homeward \
    && mkdir /data \
    && chown homeward:homeward /data
COPY --from=build /opt/homeward /opt/homeward
USER homeward
WORKDIR /data
EXPOSE 8000
CMD ["homeward", "api"]
