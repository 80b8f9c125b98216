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
# ring compiles C for the TLS code: with musl's wrapper, as scripts/build-static.sh does.
ENV CC_x86_64_unknown_linux_musl=musl-gcc
# Not position-independent, as scripts/build-static.sh builds it (fewer page
# faults and less memory at every start; see BENCHMARKS.md).
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C relocation-model=static"
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
    && cp target/x86_64-unknown-linux-musl/release/kubexit /kubexit

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
COPY --from=build /kubexit /bin/kubexit
ENTRYPOINT ["/bin/kubexit"]
