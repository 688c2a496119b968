# The bazaar binary in a small image; compose.yaml builds it for its three nodes.
#
#   docker build -t bazaar .
#   docker run --rm -p 8080:8080 -e BAZAAR_HTTP_ADDR=0.0.0.0:8080 bazaar serve

# --- build -----------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: every member's manifest is needed to resolve it, and vendor/ holds the
# patched rskafka that [patch.crates-io] points at (.dockerignore keeps target/ and data out).
COPY . .
# The caches keep downloaded crates and compiled dependencies between builds; the binary is
# copied out of the cached target directory, which the next stage cannot see.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bazaar-node \
    && cp target/release/bazaar /usr/local/bin/bazaar

# --- run -------------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid, so a mounted data directory can be given to it on the host.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/bazaar --shell /usr/sbin/nologin bazaar \
    && install -d -o bazaar -g bazaar -m 0700 /var/lib/bazaar
COPY --from=build /usr/local/bin/bazaar /usr/local/bin/bazaar
USER bazaar
WORKDIR /var/lib/bazaar
ENV BAZAAR_DATA_DIR=/var/lib/bazaar
EXPOSE 8080 7000
ENTRYPOINT ["bazaar"]
CMD ["serve"]
