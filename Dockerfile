# syntax=docker/dockerfile:1
#
# pgmlcat container image.
#
#   docker build -t pgmlcat .
#   docker run -p 6432:6432 -p 9930:9930 \
#     -v $PWD/pgcat.toml:/etc/pgcat/pgcat.toml:ro pgmlcat
#
# ---------------------------------------------------------------- builder
FROM rust:1-bookworm AS builder

# Nothing beyond the Rust toolchain is needed yet.
# NOTE: once the LightGBM backend lands, its bindings need bindgen and a CMake
# build of LightGBM, so add here:
#   apt-get install -y --no-install-recommends libclang-dev clang
#   and cmake >= 3.28 (bookworm ships 3.25: take it from bookworm-backports
#   or `pip install cmake`).
# RUN apt-get update \
#  && apt-get install -y --no-install-recommends libclang-dev clang cmake \
#  && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

RUN if [ -f Cargo.lock ]; then \
        cargo build --release --locked --bin pgmlcat; \
    else \
        cargo build --release --bin pgmlcat; \
    fi
RUN strip target/release/pgmlcat

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin pgmlcat \
 && mkdir -p /etc/pgcat

COPY --from=builder /src/target/release/pgmlcat /usr/local/bin/pgmlcat
# Default config (the docker-compose one); mount your own over it.
COPY docker/pgcat.toml /etc/pgcat/pgcat.toml

USER pgmlcat
# 6432: Postgres protocol; 9930: Prometheus exporter.
EXPOSE 6432 9930

ENTRYPOINT ["pgmlcat"]
CMD ["/etc/pgcat/pgcat.toml"]
