# Two images from one file:
#   --target api     the API and `winnow migrate`: no torch, no Chromium (ONNX Runtime predicts)
#   --target worker  every kind of worker: torch, torchvision, Playwright with Debian's Chromium
# CPU-only hosts can take torch's CPU wheels (much smaller than the CUDA build):
#   docker build --target worker --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu .
FROM python:3.11-slim-bookworm AS source
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY api ./api
COPY workers ./workers
COPY web ./web
COPY migrations ./migrations
RUN useradd --create-home --uid 1000 winnow && mkdir -p /data && chown winnow /data
ENV WINNOW_DATA_DIR=/data \
    WINNOW_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1

FROM source AS api
RUN pip install --no-cache-dir .
USER winnow
EXPOSE 8000
CMD ["winnow", "serve", "--no-worker"]

FROM source AS worker
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir ".[worker]"
USER winnow
ENV WINNOW_CHROMIUM=/usr/bin/chromium
CMD ["winnow", "worker", "-Q", "cpu,browser,gpu"]
