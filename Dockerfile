# syntax=docker/dockerfile:1
#
# torchlab: PyTorch over HTTP.
#
#   docker build -t torchlab .
#   docker run --rm -p 8000:8000 torchlab                 # CPU
#   docker run --rm -p 8000:8000 --gpus all torchlab      # GPU (needs the NVIDIA Container Toolkit)
#   docker build --build-arg EXTRAS=ray -t torchlab:ray . # with Ray Serve, for a Ray cluster's nodes
#
# Several server processes in one container: -e WEB_CONCURRENCY=4 (uvicorn's own setting), with
# -e PROMETHEUS_MULTIPROC_DIR=/tmp/metrics --tmpfs /tmp/metrics so that /metrics adds them up
# (an empty directory at each start; see the README's "Scaling out").
#
# The torch wheel pip installs from PyPI is the CUDA build: it bundles the CUDA runtime
# libraries (nvidia-* wheels), so the same image runs on CPU and, given a GPU and the host's
# NVIDIA driver, on CUDA. The image is large (several GB) for that reason.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# An unprivileged user with a home directory (torch and matplotlib write caches under $HOME).
RUN groupadd --system --gid 10001 torchlab \
    && useradd --system --uid 10001 --gid torchlab --create-home --home-dir /home/torchlab \
        --shell /usr/sbin/nologin torchlab

# Optional extras of pyproject.toml, comma-separated ("ray": Ray Serve, for deploy/ray).
ARG EXTRAS=""

# Dependencies first, in their own layer, so that editing the code does not reinstall torch.
COPY pyproject.toml README.md ./
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = [e for e in os.environ['EXTRAS'].split(',') if e]; print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself (its dependencies are already satisfied).
COPY service/ service/
COPY schemas/ schemas/
RUN pip install --no-cache-dir .
# The nginx template and the Ray Serve application; on the path, so that a Serve config's
# import_path (deploy.ray.app:app) imports on every node that runs this image.
COPY deploy/ deploy/
ENV PYTHONPATH=/app

USER 10001:10001

EXPOSE 8000

# python:3.11-slim has no curl; urlopen raises (exit 1) on a refused connection or an HTTP error.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["uvicorn", "service.main:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", \
     "--http", "service.protocol:HeadTimedProtocol"]
