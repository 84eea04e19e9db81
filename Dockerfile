# A SageMaker bring-your-own-container image for spotrun.
#
#   docker build -t spotrun .
#   docker run --gpus all spotrun train     # what SageMaker runs
#
# SageMaker starts the image as `IMAGE train`; spotrun is the entrypoint and
# PID 1: it reads /opt/ml/input/config/*.json, runs mpirun over the job's
# hosts (ssh with the key pair made below, the same in every container of
# the image), turns SageMaker's SIGTERM into SIGUSR1 for the ranks, and
# writes /opt/ml/model and /opt/ml/output/failure. See examples/sagemaker/.

ARG CUDA_VERSION=13.0.1
ARG UBUNTU=ubuntu24.04

# ---- build: the binary and the CUDA plugin ----
FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config openmpi-bin libopenmpi-dev \
        libhdf5-dev libcurl4-openssl-dev libssl-dev libxml2-dev \
        libjansson-dev libopenblas-dev zlib1g-dev libisal-dev libnccl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DSPOTRUN_BUILD_TESTS=OFF \
        -DSPOTRUN_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="80;90" \
    && cmake --build /build -j"$(nproc)"

# ---- runtime ----
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}
ENV DEBIAN_FRONTEND=noninteractive
# The -dev packages bring exactly the shared libraries the build linked
# against, whatever their versioned names on this release.
RUN apt-get update && apt-get install -y --no-install-recommends \
        openmpi-bin libopenmpi-dev libhdf5-dev libcurl4-openssl-dev \
        libssl-dev libxml2-dev libjansson-dev libopenblas-dev zlib1g-dev \
        libisal-dev openssh-server openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/spotrun /build/libspotrun_cuda.so /opt/spotrun/bin/
# One key pair for every container of this image: the leader's mpirun
# reaches the other hosts' sshd with it (SageMaker's network is private to
# the job).
RUN mkdir -p /etc/spotrun/ssh /run/sshd \
    && ssh-keygen -q -t ed25519 -N '' -C spotrun -f /etc/spotrun/ssh/id_ed25519 \
    && cp /etc/spotrun/ssh/id_ed25519.pub /etc/spotrun/ssh/authorized_keys \
    && ssh-keygen -q -t ed25519 -N '' -C spotrun-host \
        -f /etc/spotrun/ssh/ssh_host_ed25519_key \
    && chmod 700 /etc/spotrun/ssh
ENV PATH=/opt/spotrun/bin:$PATH \
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ENTRYPOINT ["/opt/spotrun/bin/spotrun"]
CMD ["train"]
