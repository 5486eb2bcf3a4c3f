# syntax=docker/dockerfile:1
# hallpass: multi-stage build, small runtime image, non-root user.
#   docker build -t hallpass .
#   docker run -p 8080:8080 -e HALLPASS_DATABASE_URL=postgres://… -e HALLPASS_MASTER_KEY=… hallpass

FROM rust:1.95-bookworm AS build
WORKDIR /src
# aws-lc-sys builds AWS-LC from C (cmake is only needed on some targets; clang/gcc come with the image).
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/deps/hallpass* target/release/hallpass*
COPY src ./src
COPY migrations ./migrations
COPY config ./config
# touch: COPY keeps the files' old mtimes, which could look older than the placeholder build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked && strip target/release/hallpass

FROM debian:bookworm-slim
# ca-certificates: the migrate endpoint calls the operator's HTTPS UserInfo URL.
# curl: the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/hallpass --create-home hallpass
COPY --from=build /src/target/release/hallpass /usr/local/bin/hallpass
USER hallpass
WORKDIR /var/lib/hallpass
ENV HALLPASS_LISTEN=0.0.0.0:8080 \
    HALLPASS_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz >/dev/null || exit 1
# SIGTERM drains in-flight requests and flushes pending writes before exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hallpass"]
CMD ["serve"]
