# pgbroadcast: one static-ish binary on a slim Debian base.
#   docker build -t pgbroadcast .
#   docker run -e DATABASE_URL=postgres://... -e PGBROADCAST_JWT_SECRET=... -p 8080:8080 pgbroadcast
# Serving 0.0.0.0 needs authentication configured (or PGBROADCAST_INSECURE=true).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
# The workspace's other member (the benchmark): its manifest and sources are
# read, not built.
COPY bench/Cargo.toml bench/Cargo.toml
COPY bench/src bench/src
COPY migrations migrations
COPY sql sql
RUN cargo build --release --locked -p pgbroadcast --bin pgbroadcast

FROM debian:bookworm-20260518-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pgbroadcast /usr/local/bin/pgbroadcast
USER nobody
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["pgbroadcast"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
