# The calibration service: migrates the database, then serves on port 8000 as a non-root user.
FROM python:3.11-slim

# HOME and MPLCONFIGDIR are writable by the service's user: matplotlib keeps its font cache
# there (built once below, not at every start).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/app \
    MPLCONFIGDIR=/home/app/.config/matplotlib

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app

WORKDIR /srv/app

# The dependencies in their own layer, read from pyproject.toml alone: a code change does not
# reinstall them.
COPY pyproject.toml /tmp/src/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the package, a plain install: the Alembic scripts ship inside it, and so does the
# client's artifact code (clients/python), which the service applies calibrators with. No source
# stays behind.
COPY README.md /tmp/src/
COPY clients/python /tmp/src/clients/python
COPY migrations /tmp/src/migrations
COPY app /tmp/src/app
RUN pip install --no-deps /tmp/src \
    && rm -rf /tmp/src \
    && mkdir -p /srv/app/data \
    && chown app:app /srv/app/data

USER 10001:10001
RUN python -c "import matplotlib.font_manager" \
    && test -d "$MPLCONFIGDIR"
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4).status == 200 else 1)"]

CMD ["sh", "-c", "calibration-service migrate && exec calibration-service serve --host 0.0.0.0 --port 8000"]
