# syntax=docker/dockerfile:1
# One image for every nightowl process (api, workers, beat, migrate).
#   docker build -t nightowl:cpu .                                  # CPU torch (~1 GB image)
#   docker build -t nightowl:cuda --build-arg TORCH_VARIANT=cu126 . # CUDA torch for GPU workers
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# cpu, or a CUDA tag of the PyTorch wheel index (cu124, cu126, ...). The CUDA wheels bundle
# their runtime; the host needs only the NVIDIA driver and container toolkit.
ARG TORCH_VARIANT=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NIGHTOWL_HOME=/data \
    TOKENIZERS_PARALLELISM=false

RUN useradd --create-home --uid 1000 nightowl \
    && mkdir -p /data && chown nightowl:nightowl /data
WORKDIR /app

# torch first and from the variant's index: a plain `pip install .` would pull the CUDA build
# (gigabytes) into a CPU image. Its own layer, so code changes do not re-download it.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        "torch>=2.4,<2.14"

COPY pyproject.toml README.md ./
COPY nightowl ./nightowl
COPY api ./api
COPY tasks ./tasks
COPY workers ./workers
COPY migrations ./migrations
RUN pip install .

USER nightowl
VOLUME ["/data"]
EXPOSE 8000
# compose.yaml gives each service its command; alone the image explains itself.
CMD ["nightowl", "--help"]
