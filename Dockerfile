# syntax=docker/dockerfile:1
# metasync production image: one image, one process per container (docker-compose.yml
# picks the command). Build: `docker build -t metasync:$(git describe --always) .`
#
# The base is pinned to a Debian release so a rebuild does not silently move to a new one.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: wheels for every runtime dependency -----------------------------------
# All pins in requirements.txt ship manylinux wheels, so no compiler is needed; a
# dependency without one makes this stage fail loudly rather than the runtime stage.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --wheel-dir /wheels -r requirements.txt

# --- runtime ----------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini is PID 1: it forwards SIGTERM to the process (graceful stop of the daemons and
# Celery's warm shutdown) and reaps zombies.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 metasync \
    && useradd --system --uid 10001 --gid metasync --create-home --home-dir /home/metasync \
       --shell /usr/sbin/nologin metasync

# Dependencies only from the wheels built above (requirements.txt, never the dev set).
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code stays owned by root: the service user can read it but not change it.
WORKDIR /app
COPY . /app

# Static files for the admin, collected at build time. Settings refuse to load
# without their required variables, so this one RUN gets throw-away values inline;
# they are never ENV and do not exist in the final image. METASYNC_ENV_FILE points
# nowhere so no env file is read (.env is also excluded by .dockerignore).
RUN METASYNC_ENV_FILE=/nonexistent \
    DJANGO_SECRET_KEY=build-only-not-a-secret-build-only-not-a-secret \
    DATABASE_URL=postgres://build:build@127.0.0.1:5432/build \
    REDIS_URL=redis://127.0.0.1:6379/0 \
    python manage.py collectstatic --noinput --verbosity 0

USER metasync
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--"]
# The web process; every other process overrides the command (docker-compose.yml).
CMD ["gunicorn", "metasync.wsgi:application", "-c", "python:metasync.gunicorn_conf", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
