# Stand-in base images for the smoke test (sourced, not run; needs lib.sh and
# a running engine). Nothing can be pulled from an image registry here, so
# every image that Dockerfile and docker-compose.yml name is built locally,
# from Debian packages and the host's Go toolchain, and tagged with exactly
# that name. Root filesystems are prepared on the host side (debootstrap and
# apt reach the Debian mirror from the host, as every other install does),
# cached as tarballs, imported into the engine, and finished with a
# Dockerfile read from stdin (no build context, no network).
# deploy/README.md ("Stand-in images") says how each differs from the real one.

# Bump when a recipe changes: an image whose label differs is rebuilt.
STANDIN_REV=3
ROOTFS=$CACHE/rootfs

debian_mirror() {
  local m
  m=$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [ -n "$m" ] || m=$(sed -n 's/^deb \(http[^ ]*debian\) bookworm.*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)
  echo "${m:-http://deb.debian.org/debian}"
}

# chroot_run DIR CMD...: a command in a root filesystem being prepared.
chroot_run() {
  local dir=$1
  shift
  mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
  local rc=0
  chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@" || rc=$?
  umount "$dir/proc"
  return $rc
}

# rootfs_base: Debian bookworm (minbase) with CA certificates and tzdata.
rootfs_base() {
  local tar=$ROOTFS/base.tar dir=$CACHE/work/base
  [ -f "$tar" ] && return
  mkdir -p "$ROOTFS" "$CACHE/work"
  if [ ! -f "$dir/.debootstrap-done" ]; then
    rm -rf "$dir"
    debootstrap --variant=minbase bookworm "$dir" "$(debian_mirror)" >"$CACHE/work/debootstrap.log" 2>&1 ||
      { tail -20 "$CACHE/work/debootstrap.log" >&2; die "debootstrap failed"; }
    touch "$dir/.debootstrap-done"
  fi
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod +x "$dir/usr/sbin/policy-rc.d"
  chroot_run "$dir" apt-get update -qq
  chroot_run "$dir" apt-get install -y -qq --no-install-recommends ca-certificates tzdata >"$CACHE/work/base.log" 2>&1 ||
    { tail -20 "$CACHE/work/base.log" >&2; die "apt-get install in the base root filesystem failed"; }
  chroot_run "$dir" apt-get clean
  rm -f "$dir/.debootstrap-done"
  tar -C "$dir" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  rm -rf "$dir"
}

# rootfs NAME PACKAGES...: the base plus Debian packages, then the function
# finish_NAME (if any) on the directory; cached as $ROOTFS/NAME.tar.
rootfs() {
  local name=$1 tar=$ROOTFS/$1-$STANDIN_REV.tar dir=$CACHE/work/$1
  shift
  [ -f "$tar" ] && return
  rootfs_base
  rm -rf "$dir" && mkdir -p "$dir"
  tar -C "$dir" -xf "$ROOTFS/base.tar"
  if [ $# -gt 0 ]; then
    chroot_run "$dir" apt-get install -y -qq --no-install-recommends "$@" >"$CACHE/work/$name.log" 2>&1 ||
      { tail -20 "$CACHE/work/$name.log" >&2; die "apt-get install $* in the $name root filesystem failed"; }
  fi
  chroot_run "$dir" apt-get clean
  rm -rf "$dir"/var/lib/apt/lists/* "$dir/usr/sbin/policy-rc.d"
  if declare -F "finish_$name" >/dev/null; then "finish_$name" "$dir"; fi
  tar -C "$dir" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  rm -rf "$dir"
}

# standin TAG ROOTFS-NAME DOCKERFILE-LINES: imports the root filesystem and
# finishes it with the given Dockerfile instructions, unless an image of this
# recipe revision is already there.
standin() {
  local tag=$1 name=$2 lines=$3
  if [ "$(docker image inspect -f '{{index .Config.Labels "evsnap.standin"}}' "$tag" 2>/dev/null)" = "$STANDIN_REV" ]; then
    echo "  $tag: cached"
    return
  fi
  local t0
  t0=$(date +%s)
  rootfs "$name" "${@:4}"
  local raw=evsnap-standin/$name-rootfs:$STANDIN_REV
  docker image inspect "$raw" >/dev/null 2>&1 || docker import "$ROOTFS/$name-$STANDIN_REV.tar" "$raw" >/dev/null
  printf 'FROM %s\n%s\nLABEL evsnap.standin=%s\n' "$raw" "$lines" "$STANDIN_REV" |
    docker build -q -t "$tag" - >/dev/null 2>"$CACHE/work/build-$name.log" || die "building stand-in $tag failed"
  echo "  $tag: built in $(($(date +%s) - t0))s"
}

# --- golang:1.26: the host's Go toolchain in Debian ---
finish_golang() {
  local goroot
  goroot=$(go env GOROOT)
  mkdir -p "$1/usr/local" "$1/go/bin" "$1/go/src"
  cp -a "$goroot" "$1/usr/local/go"
  chmod -R 777 "$1/go"
}

# --- gcr.io/distroless/static-debian12:nonroot: no shell, no package ---
# manager: passwd/group with uid 65532, CA certificates, tzdata, /tmp.
finish_distroless() {
  local d=$1 keep
  keep=$(mktemp -d)
  mkdir -p "$keep/etc/ssl/certs" "$keep/usr/share" "$keep/home/nonroot" "$keep/tmp" "$keep/root" "$keep/var/lib/dpkg/status.d"
  cp -a "$d/etc/ssl/certs/ca-certificates.crt" "$keep/etc/ssl/certs/"
  cp -a "$d/usr/share/zoneinfo" "$keep/usr/share/"
  cp -a "$d/etc/os-release" "$keep/etc/os-release.tmp" 2>/dev/null || cp -aL "$d/usr/lib/os-release" "$keep/etc/os-release.tmp"
  mv "$keep/etc/os-release.tmp" "$keep/etc/os-release"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$keep/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$keep/etc/group"
  chown 65532:65532 "$keep/home/nonroot" && chmod 700 "$keep/home/nonroot"
  chmod 1777 "$keep/tmp" && chmod 700 "$keep/root"
  # Everything else of the Debian root goes: the image has no shell.
  umount "$d/proc" 2>/dev/null || true
  find "$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  cp -a "$keep/." "$d/"
  mkdir -p "$d/proc" "$d/bin" && rm -rf "$keep"
}

# --- postgres:15: Debian's PostgreSQL 15 and an entrypoint that does what ---
# the official image's does with POSTGRES_USER/PASSWORD/DB and PGDATA.
finish_postgres() {
  local d=$1
  rm -rf "$d/var/lib/postgresql/15" "$d/etc/postgresql/15"
  mkdir -p "$d/var/lib/postgresql/data" "$d/var/run/postgresql" "$d/usr/local/bin"
  cat >"$d/usr/local/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
# Stand-in for the official postgres image's entrypoint (see deploy/README.md):
# on an empty $PGDATA, initdb with POSTGRES_USER and POSTGRES_PASSWORD, create
# POSTGRES_DB on a socket-only server, stop it; then run postgres as the
# postgres user, listening on every address with password auth over TCP.
set -eu
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
  : "${PGDATA:=/var/lib/postgresql/data}"
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required (as in the official image)}"
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pw=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
    chown postgres "$pw"
    as_pg initdb -D "$PGDATA" --username="$user" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256
    rm -f "$pw"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    as_pg pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start
    if [ "$db" != postgres ]; then
      as_pg psql -v ON_ERROR_STOP=1 -q --username "$user" --dbname postgres -c "CREATE DATABASE \"$db\""
    fi
    as_pg pg_ctl -D "$PGDATA" -m fast -w stop
    echo "PostgreSQL init process complete; ready for start up."
  fi
  shift
  exec setpriv --reuid=postgres --regid=postgres --init-groups postgres "$@"
fi
exec "$@"
SH
  chmod +x "$d/usr/local/bin/docker-entrypoint.sh"
}

# --- prom/prometheus: Debian's prometheus, laid out as the official image ---
finish_prometheus() {
  local d=$1
  mkdir -p "$d/prometheus"
  chown 65534:65534 "$d/prometheus"
}

# --- nats:2.12-alpine: Debian's nats-server, plus wget for the health check ---

build_standins() {
  local goversion
  goversion=$(go env GOVERSION)
  standin golang:1.26 golang "ENV GOLANG_VERSION=${goversion#go} GOPATH=/go GOTOOLCHAIN=local \\
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    GOPROXY=http://$BRIDGE_IP:$MODPROXY_PORT GOSUMDB=off
WORKDIR /go"
  standin gcr.io/distroless/static-debian12:nonroot distroless "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532
WORKDIR /home/nonroot"
  standin nats:2.12-alpine nats "EXPOSE 4222 6222 8222
CMD [\"nats-server\"]" nats-server wget
  standin postgres:15 postgres "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT [\"docker-entrypoint.sh\"]
CMD [\"postgres\"]" postgresql-15
  local promtag
  promtag=$(sed -n 's/^ *image: *\(prom\/prometheus:[^ ]*\).*/\1/p' docker-compose.yml)
  [ -n "$promtag" ] || die "no prom/prometheus image in docker-compose.yml"
  standin "$promtag" prometheus "USER nobody
WORKDIR /prometheus
VOLUME /prometheus
EXPOSE 9090
ENTRYPOINT [\"/bin/prometheus\"]
CMD [\"--config.file=/etc/prometheus/prometheus.yml\", \"--storage.tsdb.path=/prometheus\"]" prometheus
}
