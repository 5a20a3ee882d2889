# Shared settings and helpers of the compose smoke test (sourced, not run).
# Everything the run installs or builds is cached under $CACHE, outside the
# repository, so a second run reuses it; everything it starts lives under
# $RUN and in the network namespace $NETNS, and is removed when it ends.

CACHE=${EVSNAP_COMPOSE_CACHE:-/var/cache/evsnap-compose}
RUN=/run/evsnap-compose
NETNS=evsnap-compose
# The engine's default bridge, inside $NETNS: builds reach the module proxy
# (served in the namespace) at its gateway address.
BRIDGE_IP=172.31.213.1
BRIDGE_CIDR=$BRIDGE_IP/24
ADDRESS_POOL=172.31.216.0/21
MODPROXY_PORT=8079

export DOCKER_HOST=unix://$RUN/docker.sock
export DOCKER_CONFIG=$CACHE/docker-config
# Without buildx, compose and the CLI use the engine's classic builder.
export DOCKER_BUILDKIT=0
export COMPOSE_PROGRESS=plain

SMOKE_T0=${SMOKE_T0:-$(date +%s)}
STEP_NAME=
STEP_T0=

# step NAME: ends the current step (printing its time) and starts NAME.
step() {
  step_end
  STEP_NAME=$1
  STEP_T0=$(date +%s)
  printf '\n== [%4ss] %s\n' "$((STEP_T0 - SMOKE_T0))" "$STEP_NAME"
}

step_end() {
  if [ -n "$STEP_NAME" ]; then
    local now
    now=$(date +%s)
    printf -- '-- %s: %ss\n' "$STEP_NAME" "$((now - STEP_T0))"
    STEP_TIMES+=("$(printf '%5ss  %s' "$((now - STEP_T0))" "$STEP_NAME")")
    STEP_NAME=
  fi
}
STEP_TIMES=()

die() {
  printf '\nFAIL (%s): %s\n' "${STEP_NAME:-setup}" "$*" >&2
  exit 1
}

# wait_for SECONDS WHAT CMD...: runs CMD every 2s until it succeeds, or fails
# the run saying WHAT did not happen within SECONDS.
wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$(($(date +%s) + limit))
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "$what: not within ${limit}s"
    fi
    sleep 2
  done
}

# in_netns CMD...: runs CMD (a host binary) in the engine's network namespace.
in_netns() { nsenter --net=/run/netns/$NETNS "$@"; }

# dashboard_queries FILE: every PromQL query of a Grafana dashboard (its
# panels', and the selector of each label_values variable), one a line,
# with the dashboard's variables replaced as "All" does (.*) and
# $__rate_interval by 1m.
dashboard_queries() {
  jq -r '(.templating.list[] | select(.type == "query") | .query
           | capture("^label_values\\((?<s>.*),\\s*[a-zA-Z_]+\\)$").s),
         (.panels[] | ., .panels[]? | .targets[]? | .expr) | gsub("\n"; " ")' "$1" |
    sed -e 's/\$__rate_interval/1m/g' -e 's/\${\{0,1\}[a-zA-Z_]\{1,\}}\{0,1\}/.*/g'
}
