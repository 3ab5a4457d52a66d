# syntax=docker/dockerfile:1
# The shardflake binary (node and coordinator, with the etcd backend).
# Build: `docker build -t shardflake .`
# Run: `docker run -p 8080:8080 -e MACHINE_ID=1 -v shardflake-state:/var/lib/shardflake shardflake`
# The state volume keeps the node's reservation across container restarts: without it a
# restarted container starts from an empty state directory (see README, restart safety).
# Cluster mode (deploy/ha/docker-compose.yml): credentials come from the environment, never
# from flags: a coordinator takes SHARDFLAKE_NODE_TOKEN, SHARDFLAKE_READ_TOKEN and
# SHARDFLAKE_ADMIN_TOKEN, a node `serve --coordinator URLS` SHARDFLAKE_NODE_TOKEN
# (docs/security.md).

FROM rust:1-bookworm AS build
# protoc: the etcd backend's client is generated from etcd's protobuf definitions.
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Debug info is for profiling on developer machines; the image does not need it.
ENV CARGO_PROFILE_RELEASE_DEBUG=0
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shardflake-cli --features etcd \
    && cp target/release/shardflake /usr/local/bin/shardflake

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/shardflake \
        --shell /usr/sbin/nologin shardflake \
    && mkdir -p /var/lib/shardflake \
    && chown shardflake:shardflake /var/lib/shardflake
COPY --from=build /usr/local/bin/shardflake /usr/local/bin/shardflake
USER shardflake
ENV PORT=8080 \
    SHARDFLAKE_BIND=0.0.0.0 \
    SHARDFLAKE_STATE_DIR=/var/lib/shardflake \
    SHARDFLAKE_LOG_FORMAT=json \
    RUST_LOG=info
VOLUME ["/var/lib/shardflake"]
EXPOSE 8080
# SIGTERM drains in-flight requests and persists the exact last issued bound (exit 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/shardflake"]
CMD ["serve"]
