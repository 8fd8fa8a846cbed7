# procwatch in a container: one image for the server, the agent and the alarm service.
#
#   docker build -t procwatch .
#   docker run --rm -p 127.0.0.1:8000:8000 procwatch server --listen 0.0.0.0:8000 --insecure
#
# deploy/compose.yaml runs a server on InfluxDB with an agent watching the Docker host.
# NOTE: written to be correct, not run: Docker was not available where procwatch was built.

# --- build: the release binary -------------------------------------------------------------
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The bundled SQLite and ring need a C compiler: the rust slim image has gcc and libc6-dev.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p procwatch \
 && install -m 0755 target/release/procwatch /usr/local/bin/procwatch

# --- runtime: Debian slim, an unprivileged user -------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/procwatch procwatch \
 && install -d -o procwatch -g procwatch -m 0750 /var/lib/procwatch /var/lib/procwatch/data
COPY --from=build /usr/local/bin/procwatch /usr/local/bin/procwatch
COPY procwatch.example.toml /usr/share/doc/procwatch/procwatch.example.toml
USER procwatch
WORKDIR /var/lib/procwatch
ENV PROCWATCH_DATA_DIR=/var/lib/procwatch/data
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/procwatch"]
CMD ["--help"]
