# ecs-renewd container image: a static binary, a CA bundle and an empty state directory on scratch.
#
#   Compile inside the build:  docker build -t ecs-renewd .
#   From a binary built on the host (no compiler, no base image to pull):
#     RUSTFLAGS="-C target-feature=+crt-static" \
#       cargo build --release --locked --target x86_64-unknown-linux-gnu
#     cp /etc/ssl/certs/ca-certificates.crt target/ca-certificates.crt
#     buildah bud --target runtime --build-arg BINARY_SOURCE=prebuilt -t ecs-renewd .
#
# Both sources export the same layout under /out; `binary` picks one by build-arg, and builders
# that skip unused stages (BuildKit, buildah) never run the other.
ARG BINARY_SOURCE=build

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
COPY crates/ crates/
# crt-static: scratch has no dynamic loader. glibc >= 2.34 carries the files/dns NSS modules
# itself, so name resolution still works without libnss_*.so.
ENV RUSTFLAGS="-C target-feature=+crt-static"
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/ecs-renewd /out/ecs-renewd \
 && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt \
 && mkdir -p /out/state/ecs-renewd

FROM scratch AS prebuilt
ARG PREBUILT_BINARY=target/x86_64-unknown-linux-gnu/release/ecs-renewd
ARG PREBUILT_CA_BUNDLE=target/ca-certificates.crt
COPY ${PREBUILT_BINARY} /out/ecs-renewd
COPY ${PREBUILT_CA_BUNDLE} /out/ca-certificates.crt
# WORKDIR is the only way to make an empty directory without a shell.
WORKDIR /out/state/ecs-renewd

FROM ${BINARY_SOURCE} AS binary

FROM scratch AS runtime
LABEL org.opencontainers.image.title="ecs-renewd" \
      org.opencontainers.image.description="Keeps Alibaba Cloud ECS subscription instances from expiring" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binary /out/ecs-renewd /usr/local/bin/ecs-renewd
# The source is the parent, so the state directory is itself a copied entry and gets --chown:
# the non-root user can write the ledger, and a new volume inherits that ownership.
COPY --from=binary --chown=65532:65532 /out/state/ /var/lib/
ENV ECS_RENEWD_STATE_DIR=/var/lib/ecs-renewd \
    ECS_RENEWD_ADMIN_LISTEN=0.0.0.0:9469 \
    ECS_RENEWD_CONFIG=/etc/ecs-renewd/config.toml
USER 65532:65532
VOLUME /var/lib/ecs-renewd
EXPOSE 9469
STOPSIGNAL SIGTERM
# No shell or curl in the image: the binary probes its own /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/ecs-renewd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ecs-renewd"]
CMD ["run"]
