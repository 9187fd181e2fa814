# syntax=docker/dockerfile:1
# Atelier: one image for every target. In a cluster each Deployment runs
# `atelier serve --target=<name>` and a Job runs `atelier migrate` (helm/atelier, k8s/).
#
#   docker build -t atelier:dev .
#   docker run --rm -p 8080:8080 atelier:dev      # the whole platform in one container
#
# Three stages: the web app (node), the binary (rust, release), and a distroless final
# image with neither a shell nor a package manager, running as a numeric non-root user.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=20

# ---------------------------------------------------------------------------------------
# The web app and API docs: gateway/web/dist.
FROM docker.io/library/node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /src/gateway/web
COPY gateway/web/package.json gateway/web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY gateway/web/ ./
RUN npm run build

# ---------------------------------------------------------------------------------------
# The atelier binary. Protos are compiled by protox: no protoc needed.
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto/ proto/
COPY libs/ libs/
COPY services/ services/
COPY gateway/ gateway/
# Release builds embed the web app (rust-embed reads gateway/web/dist at compile time).
COPY --from=web /src/gateway/web/dist/ gateway/web/dist/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p atelier \
    && install -D -m 0755 target/release/atelier /out/atelier
# The data directory (DATA_DIR), owned by the runtime user; distroless has no mkdir.
RUN install -d -m 0750 /out/data

# ---------------------------------------------------------------------------------------
# Runtime: glibc and CA certificates, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/atelier /usr/local/bin/atelier
COPY --from=web /src/gateway/web/dist/ /usr/share/atelier/web/
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/atelier/
# Listen on every interface inside the container; services reach each other on loopback
# when one container runs them all. A cluster sets the *_URL to its Services.
# The gateway refuses plain HTTP on 0.0.0.0 unless told: give it a certificate
# (GATEWAY_TLS_CERT_FILE, GATEWAY_TLS_KEY_FILE) or, behind a proxy that terminates TLS,
# GATEWAY_PLAINTEXT=true (the Helm chart and k8s/ set it for their Ingress).
ENV DATA_DIR=/var/lib/atelier \
    WEB_DIR=/usr/share/atelier/web \
    LOG_FORMAT=json \
    GATEWAY_ADDR=0.0.0.0:8080 \
    ADMIN_ADDR=0.0.0.0:9464 \
    AUTH_GRPC_ADDR=0.0.0.0:50051 \
    AUTH_URL=https://127.0.0.1:50051 \
    IMAGE_GRPC_ADDR=0.0.0.0:50052 \
    IMAGE_URL=https://127.0.0.1:50052 \
    PROCESSING_GRPC_ADDR=0.0.0.0:50053 \
    PROCESSING_URL=https://127.0.0.1:50053 \
    WORKFLOW_GRPC_ADDR=0.0.0.0:50054 \
    WORKFLOW_URL=https://127.0.0.1:50054 \
    USER_GRPC_ADDR=0.0.0.0:50055 \
    USER_URL=https://127.0.0.1:50055
WORKDIR /var/lib/atelier
USER 65532:65532
# gateway, admin (/metrics, /healthz, /readyz), then auth, image, processing, workflow, user
EXPOSE 8080 9464 50051 50052 50053 50054 50055
ENTRYPOINT ["/usr/local/bin/atelier"]
CMD ["serve"]
