# The container engine of the smoke test (sourced, not run): Debian's
# docker.io, with dockerd started inside a network namespace of its own, so
# its bridges, NAT rules and published ports exist only there and no
# container can reach anything outside it. Needs lib.sh.

# engine_install: installs dockerd, debootstrap and jq from Debian if missing,
# without letting the package start a daemon in the host's namespace.
engine_install() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v docker >/dev/null || need+=(docker.io)
  command -v jq >/dev/null || need+=(jq)
  if [ ${#need[@]} -eq 0 ]; then
    echo "dockerd, debootstrap and jq already installed: $(dockerd --version)"
    return
  fi
  local policy=/usr/sbin/policy-rc.d own_policy=
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && own_policy=1
  fi
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ -n "$own_policy" ] && rm -f $policy
  dockerd --version
}

# engine_up: creates the namespace and starts dockerd in it, with its own
# socket, data root (cached: images survive for the next run) and exec root.
engine_up() {
  engine_down quiet
  mkdir -p "$RUN" "$CACHE/docker"
  ip netns add "$NETNS"
  in_netns ip link set lo up
  # `ip netns exec` remounts /sys, which dockerd needs as it is: nsenter only
  # switches the network namespace.
  in_netns dockerd \
    --data-root "$CACHE/docker" \
    --exec-root "$RUN/exec" \
    --pidfile "$RUN/dockerd.pid" \
    -H "$DOCKER_HOST" \
    --bip "$BRIDGE_CIDR" \
    --default-address-pool "base=$ADDRESS_POOL,size=24" \
    --storage-driver overlay2 \
    >"$RUN/dockerd.log" 2>&1 &
  local ok=
  for _ in $(seq 1 60); do
    if docker version >/dev/null 2>&1; then ok=1; break; fi
    sleep 1
  done
  [ -n "$ok" ] || { tail -20 "$RUN/dockerd.log" >&2; die "dockerd did not answer on $DOCKER_HOST within 60s"; }
  docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}'
  # The rule of this machine: the engine's addresses exist only in $NETNS.
  if ip -br addr | grep -E '^(docker0|br-|veth)' ; then
    die "a bridge of the engine appeared in the host's network namespace"
  fi
  echo "bridges in namespace $NETNS:"; in_netns ip -br addr | sed 's/^/  /'
}

# modproxy_up: serves the host's module download cache (GOPROXY layout) in
# the namespace, for `go mod download` inside image builds: the golang
# stand-in's GOPROXY points at the bridge's gateway address.
modproxy_up() {
  local dir
  dir="$(go env GOMODCACHE)/cache/download"
  in_netns /usr/bin/python3 -m http.server "$MODPROXY_PORT" --bind 0.0.0.0 --directory "$dir" \
    >"$RUN/modproxy.log" 2>&1 &
  echo $! >"$RUN/modproxy.pid"
  wait_for 20 "module proxy on $BRIDGE_IP:$MODPROXY_PORT" \
    in_netns curl -fs -o /dev/null "http://$BRIDGE_IP:$MODPROXY_PORT/"
  echo "module proxy: http://$BRIDGE_IP:$MODPROXY_PORT/ serving $dir"
}

# engine_down [quiet]: stops what engine_up and modproxy_up started and
# deletes the namespace; images and the compose binary stay cached.
engine_down() {
  local pid
  if [ -f "$RUN/modproxy.pid" ]; then
    kill "$(cat "$RUN/modproxy.pid")" 2>/dev/null || true
    rm -f "$RUN/modproxy.pid"
  fi
  if [ -f "$RUN/dockerd.pid" ]; then
    pid=$(cat "$RUN/dockerd.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$RUN/dockerd.pid"
  fi
  if ip netns list | grep -qw "$NETNS"; then
    # Anything still running in the namespace was started by this script.
    for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$NETNS"
  fi
  [ "${1:-}" = quiet ] || echo "engine stopped, namespace $NETNS deleted"
}
