# tinyserve: serve ONNX models over JSON with onnxruntime.
#
#   docker build -t tinyserve .                     the serving image (last stage, the default)
#   docker run -p 8000:8000 tinyserve               serves the default models from /models
#   docker run -p 8000:8000 -v /my/models:/models:ro tinyserve      serves yours instead
#   docker build --target train -t tinyserve-train .                TensorFlow, to rebuild models:
#   docker run -v "$PWD/out:/out" tinyserve-train      trains every built-in model into ./out
#
# BASE_IMAGE may be any Debian-like image with Python 3.11 and venv (deploy/container.sh passes
# a locally made one where no registry is reachable); everything uses python3 and python3 -m venv.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Builder: a venv holding the service and its serving dependencies only (wheels; no compiler).
FROM base AS builder
WORKDIR /src
RUN python3 -m venv /opt/venv
# Dependencies in their own layer, from the serving lock (exact versions and hashes): editing
# the code reuses it.
COPY requirements/serve.txt ./requirements/
RUN pip install -r requirements/serve.txt
COPY pyproject.toml ./
COPY service ./service
# Non-editable: the venv is self-contained and /src stays behind in this stage.
# pip and setuptools are only needed to install; the serving image runs without them.
# pip check fails the build when the lock breaks a range in pyproject.toml (not re-locked).
RUN pip install --no-deps . && pip check && pip uninstall -y pip setuptools

# Train: the training extra (TensorFlow) on top of the same code, able to rebuild the models.
# Not used by the serving image; build it with --target train.
FROM base AS train
WORKDIR /src
RUN python3 -m venv /opt/venv
# The test lock is the one that holds the training packages (it adds the small test tools).
COPY requirements/test.txt ./requirements/
RUN pip install -r requirements/test.txt
COPY pyproject.toml ./
COPY service ./service
COPY training ./training
# Nothing new may come from the index: a lock that misses a [train] requirement fails here.
RUN pip install --no-index --no-build-isolation "./[train]"
CMD ["python3", "-m", "training", "--all", "--out", "/out"]

# Serve: the venv, the default models, a non-root user.
FROM base AS serve
# Numeric ids so Kubernetes' runAsNonRoot can verify them; useradd is in both the slim
# image and a debootstrap minbase (package passwd).
RUN groupadd --gid 10001 tinyserve \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin tinyserve
COPY --from=builder /opt/venv /opt/venv
COPY models /models
# Containers get one onnxruntime thread per session by default (scale out with replicas, or
# raise TINYSERVE_THREADS with the CPU limit); every other setting is a TINYSERVE_* variable.
ENV TINYSERVE_MODEL_ROOT=/models \
    TINYSERVE_HOST=0.0.0.0 \
    TINYSERVE_PORT=8000 \
    TINYSERVE_THREADS=1 \
    TINYSERVE_LOG_LEVEL=info
USER 10001:10001
EXPOSE 8000
# No curl in the image: Python asks /health/ready; an HTTP error or no answer exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('TINYSERVE_PORT', '8000'), timeout=4)"]
CMD ["python3", "-m", "service"]
