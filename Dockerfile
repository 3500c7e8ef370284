# Three stages, as in the original seed: the tests run while the image builds,
# and the runtime image runs the watcher as a non-root user.
#   docker build -t tcpfast .
#   docker run --rm --network host tcpfast                           # the host's connections
#   docker run --rm --pid host tcpfast --proc-root /proc/1           # the same, no host network
# PYTHON_IMAGE is the official base; scripts/container-check (CI) builds this
# file with podman from a Debian stand-in of it where no registry is reachable.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
WORKDIR /src
# pip >= 25.1 for `pip install --group test` below (the bases ship older ones).
RUN python -m venv --upgrade-deps /opt/tcpfast
ENV PATH=/opt/tcpfast/bin:$PATH
# A compiled module that fails to build fails the image (not a slow, silent fallback).
RUN TCPFAST_REQUIRE_COMPILED=1 pip install --no-cache-dir . \
 && python -c "import tcpfast, sys; sys.exit(not tcpfast.ACCELERATED)" \
 && python -m tcpfast --once > /dev/null

FROM build AS testing
# iproute2 lets the live tests compare snapshot() with ss.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir --group test && python -m pytest -ra
# A RUN of its own: a network namespace of its own, without the first run's TIME_WAIT entries.
RUN TCPFAST_PURE=1 python -m pytest -ra && touch /tests-passed

FROM ${PYTHON_IMAGE} AS runtime
# nft and ip for --block (opt-in; it also needs --user 0 --cap-add NET_ADMIN).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iproute2 \
 && rm -rf /var/lib/apt/lists/*
# Copying the marker makes the runtime image depend on the tests having passed.
COPY --from=testing /tests-passed /tmp/tests-passed
COPY --from=build /opt/tcpfast /opt/tcpfast
ENV PATH=/opt/tcpfast/bin:$PATH PYTHONUNBUFFERED=1
# /proc/net/tcp is world-readable: no root needed.
USER 10001:10001
ENTRYPOINT ["python", "-m", "tcpfast"]
