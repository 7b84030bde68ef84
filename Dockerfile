# The tidemark agent's image: the `tidemark` binary built without the simulator, stripped,
# and the official helm (checksum verified) on a distroless, non-root base.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t tidemark:dev .
#
# Build arguments (every base image and download can be replaced, e.g. by a mirror):
#   RUST_IMAGE          the builder (Rust toolchain, pkg-config, libssl-dev; glibc no newer
#                       than the runtime's)
#   RUNTIME_IMAGE       the runtime base: glibc, libssl3, zlib, CA certificates, no shell
#   HELM_VERSION        helm release the agent renders components with
#   HELM_URL            where the helm archive is downloaded from (default: get.helm.sh)
#   HELM_SHA256_AMD64,  sha256 of the archive for each architecture; the build fails on a
#   HELM_SHA256_ARM64   mismatch. Changing HELM_VERSION means changing both.
#   TIDEMARK_PREBUILT   a `tidemark` binary in the build context (e.g. target/image/tidemark)
#                       to use instead of compiling: the builder then runs no cargo (CI's
#                       image test; scripts/test-image.sh). Empty: compile from source.
#   VERSION, REVISION   written into the OCI labels.
#
# The image runs read-only: everything the agent writes (the git cache, helm's cache and
# config, temporary chart directories) goes to /var/cache/tidemark, the one volume
# (TIDEMARK_CACHE_DIR, HOME and TMPDIR point there). User 65532 (distroless `nonroot`).

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- builder: dependencies first (cached until a manifest or Cargo.lock changes) --------
FROM ${RUST_IMAGE} AS builder
ARG TIDEMARK_PREBUILT=
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY schema/Cargo.toml schema/
COPY agent/Cargo.toml agent/
COPY sim/Cargo.toml sim/
COPY tests/Cargo.toml tests/
# Empty targets stand in for the sources, so this layer compiles only the dependencies.
# Every target of every workspace member must be listed (cargo reads them all); a test
# (tests/tests/image.rs) compares this list with `cargo metadata`.
# skeleton-begin
RUN if [ -z "$TIDEMARK_PREBUILT" ]; then \
      for f in schema/src/lib.rs agent/src/lib.rs agent/src/main.rs \
               agent/benches/fleet.rs agent/benches/idle.rs agent/benches/components.rs \
               agent/benches/git_poll.rs agent/benches/status.rs agent/benches/render.rs \
               sim/src/lib.rs sim/tests/sim.rs sim/benches/sim.rs \
               tests/src/lib.rs tests/tests/e2e.rs tests/benches/fleet_sim.rs; do \
        mkdir -p "$(dirname "$f")" && echo 'fn main() {}' > "$f"; \
      done \
      && cargo build --release --locked -p tidemark --no-default-features --bin tidemark \
      && rm -rf schema/src agent/src agent/benches sim/src sim/tests sim/benches tests/src tests/tests tests/benches; \
    fi
# skeleton-end

# ---- builder: the sources -----------------------------------------------------------------
COPY . .
RUN mkdir -p /out \
    && if [ -n "$TIDEMARK_PREBUILT" ]; then \
      cp "$TIDEMARK_PREBUILT" /out/tidemark; \
    else \
      find schema agent sim tests -name '*.rs' -exec touch {} + \
      && cargo build --release --locked -p tidemark --no-default-features --bin tidemark \
      && cp target/release/tidemark /out/tidemark; \
    fi \
    && chmod 0755 /out/tidemark \
    && mkdir -p /out/cache \
    && chown 65532:65532 /out/cache \
    && chmod 0700 /out/cache

# ---- helm: the official release, checksum verified ----------------------------------------
FROM ${RUST_IMAGE} AS helm
ARG TARGETARCH
ARG HELM_VERSION=v4.1.4
ARG HELM_URL=https://get.helm.sh/helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz
ARG HELM_SHA256_AMD64=70b2c30a19da4db264dfd68c8a3664e05093a361cefd89572ffb36f8abfa3d09
ARG HELM_SHA256_ARM64=13d03672be289045d2ff00e4e345d61de1c6f21c1257a45955a30e8ae036d8f1
ADD ${HELM_URL} /tmp/helm.tar.gz
RUN case "${TARGETARCH}" in \
      amd64) sum="${HELM_SHA256_AMD64}" ;; \
      arm64) sum="${HELM_SHA256_ARM64}" ;; \
      *) echo "no helm checksum for architecture '${TARGETARCH}'" >&2; exit 1 ;; \
    esac \
    && echo "${sum}  /tmp/helm.tar.gz" | sha256sum -c - \
    && mkdir -p /tmp/helm \
    && tar -xzf /tmp/helm.tar.gz -C /tmp/helm \
    && install -m 0755 "/tmp/helm/linux-${TARGETARCH}/helm" /usr/local/bin/helm

# ---- runtime ------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
ARG HELM_VERSION=v4.1.4
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tidemark" \
      org.opencontainers.image.description="GitOps pull agent that upgrades a Kubernetes cluster from a fleet repository" \
      org.opencontainers.image.source="https://github.com/tidemark-dev/tidemark" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      dev.tidemark.helm.version="${HELM_VERSION}"
COPY --from=builder /out/tidemark /usr/local/bin/tidemark
COPY --from=helm /usr/local/bin/helm /usr/local/bin/helm
COPY --from=builder --chown=65532:65532 /out/cache /var/cache/tidemark
ENV TIDEMARK_CACHE_DIR=/var/cache/tidemark/git \
    TIDEMARK_HELM_BIN=/usr/local/bin/helm \
    HOME=/var/cache/tidemark \
    TMPDIR=/var/cache/tidemark
VOLUME ["/var/cache/tidemark"]
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["tidemark"]
CMD ["agent"]
