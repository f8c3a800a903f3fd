# Multi-stage: build streamlr (librdkafka vendored) in the Rust image, run it on a slim Debian.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin streamlr

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/streamlr streamlr \
    && mkdir -p /var/lib/streamlr && chown streamlr /var/lib/streamlr
COPY --from=build /src/target/release/streamlr /usr/local/bin/streamlr
COPY configs/streamlr.toml /etc/streamlr/streamlr.toml
USER streamlr
WORKDIR /var/lib/streamlr
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/streamlr"]
CMD ["run", "--config", "/etc/streamlr/streamlr.toml"]
