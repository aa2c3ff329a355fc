# One image for the API and every kind of worker; the command chooses the role.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY api ./api
COPY workers ./workers
COPY web ./web
COPY migrations ./migrations
RUN pip install --no-cache-dir .

RUN useradd --create-home --uid 1000 winnow && mkdir -p /data && chown winnow /data
USER winnow
ENV WINNOW_DATA_DIR=/data \
    WINNOW_CHROMIUM=/usr/bin/chromium \
    WINNOW_HOST=0.0.0.0
EXPOSE 8000
CMD ["winnow", "serve", "--no-worker"]
