# syntax=docker/dockerfile:1
# Arca server and CLI image.
#
#   docker build -t arca:latest .
#
# Builder: the official Rust image plus clang (RocksDB's bindings are generated at build time).
FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin arca \
 && install -m 0755 target/release/arca /usr/local/bin/arca

# Runtime: the binary and CA certificates only, run as an unprivileged user. (A base image that
# already carries ca-certificates, such as one made offline with debootstrap, skips apt.)
FROM debian:bookworm-slim
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/arca --create-home arca
COPY --from=builder /usr/local/bin/arca /usr/local/bin/arca
USER arca
# Ciphertext only: the data directory never holds a secret in clear.
VOLUME ["/var/lib/arca"]
EXPOSE 8200 8201
# The CLI inside the container talks to its own node.
ENV ARCA_ADDR=https://127.0.0.1:8200 \
    ARCA_CACERT=/certs/ca.pem
# `arca status` answers while sealed too: the check says the process serves, and the status
# output says whether it is unsealed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["arca", "status"]
ENTRYPOINT ["arca"]
CMD ["server", "--config", "/etc/arca/node.toml"]
