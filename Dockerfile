# One image, both binaries: /usr/local/bin/snapshotter (the default
# entrypoint, `run` by default) and /usr/local/bin/example-app.
#
#   docker build -t evsnap:dev .
#   docker run --rm evsnap:dev run -h
#   docker run --rm --entrypoint example-app evsnap:dev load -h
#
# cmd/snapshotter/deploy_test.go checks this file's final ENTRYPOINT and CMD
# against the binaries' subcommands.
#
# It builds with any builder: BuildKit (with its built-in frontend: there is
# no `# syntax=` line, so nothing is pulled for it) and the classic builder,
# which `docker compose` uses when the buildx plugin is absent (Debian's
# docker.io, for one). So no RUN --mount cache (the classic builder rejects
# it; the go.mod layer below keeps downloads cached) and no
# --platform=$BUILDPLATFORM (empty there, an error). A multi-platform buildx
# build still works: GOOS/GOARCH come from TARGETOS/TARGETARCH when set.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so source edits do not invalidate the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
# modernc.org/sqlite is pure Go, so the binaries are fully static.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/snapshotter ./cmd/example-app

# Static binaries, CA certificates and tzdata, no shell, uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/snapshotter /out/example-app /usr/local/bin/
USER 65532:65532
# Relative default paths (SQLite under data/, used only without
# EVSNAP_POSTGRES_URL) land in the nonroot user's home.
WORKDIR /home/nonroot
# /healthz, /readyz and /metrics of `snapshotter run` (--metrics-addr).
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/snapshotter"]
CMD ["run"]
