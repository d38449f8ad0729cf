# syntax=docker/dockerfile:1
#
# livecommerce: one server process per container.
#
#   docker build -t livecommerce .
#   docker run --rm -p 8080:8080 -e LIVECOMMERCE_SECRET="$(openssl rand -hex 32)" \
#       -e LIVECOMMERCE_ORDER_WEBHOOK_URL=https://shop.example/hooks \
#       -e LIVECOMMERCE_ORDER_WEBHOOK_SECRET=whsec_... livecommerce
#   # several containers behind a load balancer share state through Redis:
#   docker run ... -e LIVECOMMERCE_SECRET=... -e LIVECOMMERCE_REDIS_URL=redis://redis:6379/0 livecommerce
#   # the demo (throwaway secret, demo room and sign-in):
#   docker run --rm -p 8080:8080 livecommerce livecommerce serve --host 0.0.0.0 --port 8080 --demo
#
# Without LIVECOMMERCE_SECRET (at least 32 bytes), or without an order system
# (LIVECOMMERCE_ORDER_WEBHOOK_URL, or LIVECOMMERCE_SANDBOX_SHOP=1 for staging), the
# server refuses to start, unless
# it runs with --demo.
#
# Live video (WHIP/WHEP, docs/media.md) sends media over UDP on ports the WebRTC stack
# picks at random, and offers only the container's own addresses: run the container
# with `--network host` for WebRTC, or serve viewers over HLS.
#
# The server serves the pages from `static/` next to the `livecommerce/` package
# (livecommerce/http/app.py: STATIC_DIR = <package's parent>/static), so the package is
# installed in editable mode from /app and `static/` is copied to /app/static.
#
# hls.js (the pages' HLS player, docs/media.md "The pages") is not in the repository:
# the `vendor` stage installs it from the npm registry, as scripts/_env.sh does for a
# checkout, and its dist/hls.min.js (and licence) go to /app/static/vendor/.

ARG PYTHON_IMAGE=python:3.11-slim
ARG NODE_IMAGE=node:22-bookworm-slim
ARG HLS_JS_VERSION=1.7.4

# -- vendor: hls.js from the npm registry ----------------------------------------------
FROM ${NODE_IMAGE} AS vendor
ARG HLS_JS_VERSION
RUN npm install --no-save --no-audit --no-fund --prefix /tmp/hls "hls.js@${HLS_JS_VERSION}" \
    && mkdir -p /vendor \
    && cp /tmp/hls/node_modules/hls.js/dist/hls.min.js /vendor/hls.min.js \
    && cp /tmp/hls/node_modules/hls.js/LICENSE /vendor/hls.js.LICENSE

# -- build: a virtual environment with the dependencies and the package --------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app

# Dependencies first, from pyproject.toml and the lock alone, so that a code change
# does not reinstall them; at the lock's versions (constraints.txt, as scripts/_env.sh
# installs them), so an image built later has what the tests passed with. Every
# dependency ships wheels for linux/amd64 and arm64 on 3.11.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; \
print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt pip setuptools \
    && pip install -c constraints.txt -r /tmp/requirements.txt

# The package itself, editable: /app/livecommerce stays the imported code, so
# STATIC_DIR resolves to /app/static. (README.md is read by setuptools as the readme.)
COPY README.md ./
COPY livecommerce/ ./livecommerce/
RUN pip install --no-deps --no-build-isolation -e . \
    && python -m compileall -q livecommerce \
    && python -c "import livecommerce.http.app as a; assert str(a.STATIC_DIR) == '/app/static', a.STATIC_DIR"

# -- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 livecommerce \
    && useradd --system --uid 10001 --gid livecommerce --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin livecommerce

# Same paths as in the build stage: the venv's scripts and the editable install point
# at /opt/venv and /app. Everything stays owned by root and read-only for the server.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY static/ /app/static/
# After static/: a static/vendor/ left in the build context by a checkout is replaced.
COPY --from=vendor /vendor/ /app/static/vendor/

# HLS segments and clips (--media-dir) are the one thing the server writes. Mount a
# volume here to keep them across containers and to share them between the server
# containers of a host (docs/media.md, "Storage").
RUN mkdir -p /var/lib/livecommerce/media \
    && chown livecommerce:livecommerce /var/lib/livecommerce/media
ENV LIVECOMMERCE_MEDIA_DIR=/var/lib/livecommerce/media

WORKDIR /app
USER livecommerce:livecommerce

EXPOSE 8080

# /healthz answers 200 once the server takes connections, 503 while starting or
# draining; urlopen raises on 503 and on a refused connection, so both exit 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

# SIGTERM drains: every client gets close 1001, the process exits within 10 s
# (docker stop's default grace period is 10 s). The exec form keeps the server as
# PID 1, so it receives the signal itself.
STOPSIGNAL SIGTERM
CMD ["livecommerce", "serve", "--host", "0.0.0.0", "--port", "8080"]
