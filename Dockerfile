# The calibration service: migrates the database, then serves on port 8000 as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/app

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /srv/app --shell /usr/sbin/nologin app

COPY pyproject.toml README.md ./
COPY clients/python ./clients/python
COPY app ./app
# The migration scripts ship inside the package, and the client's artifact code with it.
RUN pip install . \
    && mkdir -p /srv/app/data \
    && chown -R app:app /srv/app/data

USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4).status == 200 else 1)"]

CMD ["sh", "-c", "calibration-service migrate && exec calibration-service serve --host 0.0.0.0 --port 8000"]
