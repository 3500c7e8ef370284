# Three stages, as in the original seed: the tests run while the image builds,
# and the runtime image runs the watcher as a non-root user.
#   docker build -t tcpfast .
#   docker run --rm --network host tcpfast              # the host's connections
# The commands below are the README's, the same ones .ci/run runs.

FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
WORKDIR /src
RUN python -m venv /opt/tcpfast
ENV PATH=/opt/tcpfast/bin:$PATH
RUN pip install --no-cache-dir . && python -m tcpfast --once > /dev/null

FROM build AS testing
# iproute2 lets the live tests compare snapshot() with ss.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir '.[test]' && python -m pytest \
 && TCPFAST_PURE=1 python -m pytest \
 && touch /tests-passed

FROM python:3.11-slim AS runtime
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
