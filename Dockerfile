# CPU image by default; its command runs the demo.
#   docker build -t cascade .
#   docker run --rm cascade
# CUDA image: choose a CUDA base and a CUDA build of torch, e.g.
#   docker build -t cascade:cuda --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#       --build-arg TORCH_SPEC=torch==2.13.0 .
#   docker run --rm --gpus all cascade:cuda cascade demo --gpu 0
# For the CPU image, point pip at PyTorch's CPU wheel index (PIP_EXTRA_INDEX_URL) to avoid CUDA wheels.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_SPEC=torch==2.13.0
ARG PIP_EXTRA_INDEX_URL=
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

# CUDA bases ship without Python; slim Python bases without make. Versions come from the base image's
# distribution, which BASE_IMAGE chooses, so they are not pinned here.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null || ! command -v make >/dev/null \
        || ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv python3-pip make \
        && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /opt/cascade
COPY pyproject.toml README.md Makefile ./
COPY cascade_cli ./cascade_cli
# The same install path as the README: make sets up .venv (torch first, then the package).
RUN make setup TORCH_SPEC="${TORCH_SPEC}"
ENV PATH=/opt/cascade/.venv/bin:${PATH}

CMD ["cascade", "demo", "--out", "/tmp/demo_out"]
