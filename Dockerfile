# syntax=docker/dockerfile:1
# hallpass: multi-stage build, small runtime image, non-root user.
#   docker build -t hallpass .
#   docker run -p 8080:8080 -e HALLPASS_DATABASE_URL=postgres://… -e HALLPASS_MASTER_KEY=… hallpass

FROM rust:1.95-bookworm AS build
WORKDIR /src
# aws-lc-sys builds AWS-LC from C (cmake is only needed on some targets; clang/gcc come with the image).
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
# Dependencies first, so source edits do not rebuild them.
# The workspace's other member (the relying-service crate) is only stubbed: the server does
# not depend on it.
COPY Cargo.toml Cargo.lock build.rs ./
COPY verifier/Cargo.toml verifier/Cargo.toml
RUN mkdir -p src verifier/src verifier/examples \
    && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo '' > verifier/src/lib.rs && echo 'fn main() {}' > verifier/examples/relying_service.rs \
    && cargo build --release --locked -p hallpass \
    && rm -rf src target/release/deps/hallpass* target/release/hallpass*
COPY src ./src
COPY migrations ./migrations
COPY config ./config
# touch: COPY keeps the files' old mtimes, which could look older than the placeholder build.
# No .git here: the build info names the commit given as a build argument.
ARG HALLPASS_COMMIT=unknown
RUN touch src/main.rs src/lib.rs \
    && HALLPASS_COMMIT=$HALLPASS_COMMIT cargo build --release --locked -p hallpass \
    && strip target/release/hallpass

FROM debian:bookworm-slim
# ca-certificates: the migrate endpoint calls the operator's HTTPS UserInfo URL (TLS to
# Postgres uses the Mozilla roots built into the binary, or sslrootcert). Nothing else: the
# health check is the binary itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 hallpass \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/hallpass --create-home hallpass
COPY --from=build /src/target/release/hallpass /usr/local/bin/hallpass
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/hallpass
# With no HALLPASS_DATABASE_URL the server keeps an embedded SQLite database (and its
# generated master key) in /var/lib/hallpass: mount a volume there to keep them.
VOLUME ["/var/lib/hallpass"]
ENV HALLPASS_LISTEN=0.0.0.0:8080 \
    HALLPASS_LOG_FORMAT=json
EXPOSE 8080
# `hallpass healthcheck` reads the same configuration as the server, so it follows an
# overridden HALLPASS_LISTEN; it fails unless /healthz answers 200 within 2 s.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/hallpass", "healthcheck"]
# SIGTERM drains in-flight requests and flushes pending writes before exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hallpass"]
CMD ["serve"]
