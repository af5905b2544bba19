# Build stage: a static binary.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery.GitHash=${VERSION}" \
      -o /out/hatchery-vsphere ./cmd/hatchery-vsphere

# Run stage: no shell, no package manager, not root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hatchery-vsphere /usr/local/bin/hatchery-vsphere
USER nonroot:nonroot
EXPOSE 8086
ENTRYPOINT ["/usr/local/bin/hatchery-vsphere"]
CMD ["start", "--config", "/etc/hatchery-vsphere/config.toml"]
