# kubexit images. The binary is fully static (musl), so it runs in any
# image, scratch included.
#
#   docker build -t kubexit .                    busybox-based: /bin/kubexit and cp,
#                                                for `cp /bin/kubexit /kubexit/kubexit`
#   docker build --target scratch -t kubexit:scratch .
#                                                nothing but /bin/kubexit, for
#                                                `/bin/kubexit --install /kubexit`
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The full build as the release builds it, and checked the same way: ring's
# C compiled with musl-gcc, not position-independent, the code a start-up
# runs linked together (fewer page faults and less memory at every start;
# see BENCHMARKS.md).
RUN scripts/build-static.sh --full-only && cp target/static/kubexit /kubexit

# The OCI labels of scripts/build-images.sh, which builds the same two
# images without a registry: pass --build-arg VERSION=... REVISION=...
FROM scratch AS scratch
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title=kubexit \
      org.opencontainers.image.source=https://github.com/kubexit/kubexit \
      org.opencontainers.image.licenses=Apache-2.0 \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.revision=$REVISION
COPY --from=build /kubexit /bin/kubexit
ENTRYPOINT ["/bin/kubexit"]

FROM busybox:1.36-musl AS default
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title=kubexit \
      org.opencontainers.image.source=https://github.com/kubexit/kubexit \
      org.opencontainers.image.licenses=Apache-2.0 \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.revision=$REVISION
# The CAs the webhook reads registries over TLS with.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /kubexit /bin/kubexit
ENTRYPOINT ["/bin/kubexit"]
