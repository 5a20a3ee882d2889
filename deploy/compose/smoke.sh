#!/usr/bin/env bash
# make compose-smoke: runs the repository's own docker-compose.yml and
# Dockerfile, unmodified, on a real engine, and checks what deploy/README.md
# ("docker compose") says a user sees. Needs root and a Go toolchain.
#
# No image can be pulled here and no traffic may leave the machine, so the
# engine (Debian's docker.io) runs inside a network namespace of its own,
# every base image the files name is a locally built stand-in with that name
# (standins.sh; deploy/README.md says how each differs), `go mod download` in
# the image build is served from the host's module cache, and Compose v2 is
# built from its module source (compose-bin.sh). All of that is cached under
# $EVSNAP_COMPOSE_CACHE (default /var/cache/evsnap-compose), so a second run
# takes a few minutes; the containers, volumes, engine and namespace are
# removed at the end, whether the run passed or not.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
HERE=deploy/compose
# shellcheck source=lib.sh
. $HERE/lib.sh
# shellcheck source=engine.sh
. $HERE/engine.sh
# shellcheck source=standins.sh
. $HERE/standins.sh

[ "$(id -u)" = 0 ] || die "needs root (network namespace, dockerd, debootstrap)"
mkdir -p "$CACHE" "$RUN"

COMPOSE_PID=
PROJECT_UP=
cleanup() {
  local rc=$?
  set +e
  step_end
  if [ -n "$COMPOSE_PID" ] && kill -0 "$COMPOSE_PID" 2>/dev/null; then kill -- "-$COMPOSE_PID" 2>/dev/null; fi
  if [ -n "$PROJECT_UP" ]; then
    if [ $rc -ne 0 ]; then
      echo "--- state at failure:"
      docker compose --profile observability ps -a 2>&1 | sed 's/^/  /'
      docker compose logs --no-color --tail 15 migrate load snapshotter 2>&1 | sed 's/^/  /' | tail -60
      [ -f "$RUN/stats.txt" ] && { echo "--- last stats --type Account:"; sed 's/^/  /' "$RUN/stats.txt"; }
    fi
    timeout 120 docker compose --profile observability --profile cluster down -v --remove-orphans -t 5 >/dev/null 2>&1
  fi
  engine_down
  if [ ${#STEP_TIMES[@]} -gt 0 ]; then
    echo; echo "step times:"; printf '  %s\n' "${STEP_TIMES[@]}"
  fi
  printf 'total: %ss\n' "$(($(date +%s) - SMOKE_T0))"
  [ $rc -eq 0 ] && echo "compose smoke: PASS" || echo "compose smoke: FAIL"
  exit $rc
}
trap cleanup EXIT
trap 'printf "\nFAIL (%s): exit %s from: %s\n" "${STEP_NAME:-setup}" "$?" "$BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- set-up
step "install: Debian's docker.io and debootstrap (if missing)"
engine_install

step "compose plugin: build in the background (cached after the first run)"
setsid bash $HERE/compose-bin.sh >"$CACHE/compose-bin.log" 2>&1 &
COMPOSE_PID=$!
echo "building or reusing Compose $(grep -o 'v[0-9.]*}' $HERE/compose-bin.sh | head -1 | tr -d '}'): log in $CACHE/compose-bin.log"

step "engine: dockerd in network namespace $NETNS"
engine_up

step "module proxy: host's module cache, served in the namespace"
go mod download
modproxy_up

step "stand-in base images (cached after the first run)"
build_standins
docker images --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -v 'evsnap-standin/' | grep -v '<none>'

step "compose plugin: wait for it"
wait "$COMPOSE_PID" || { tail -20 "$CACHE/compose-bin.log" >&2; die "building the compose plugin failed"; }
COMPOSE_PID=
tail -1 "$CACHE/compose-bin.log"
docker compose version

# ---------------------------------------------------------------- the demo
dc() { docker compose "$@"; }
replicas() { dc ps -q snapshotter; }
cname() { docker inspect -f '{{.Name}}' "$1" | tr -d /; }
cip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1"; }
# metric ID NAME: the sum of a metric's samples on one replica's /metrics.
metric() {
  in_netns curl -fsS --max-time 3 "http://$(cip "$1"):9090/metrics" 2>/dev/null |
    awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }'
}
# stored_ids ID: the aggregates a replica logged a stored snapshot for.
stored_ids() { docker logs "$1" 2>&1 | grep 'msg="snapshot stored"' | grep -o 'aggregate_id=[^ ]*' | sort -u; }

step "docker compose up -d --build"
PROJECT_UP=1
dc up -d --build 2>&1 | grep -vE '^ ---> |^Removing intermediate|^\s*$' | tail -40

# The project's network and its veths live in the engine's namespace only.
if ip -br link | grep -E '^(docker0|br-|veth)'; then
  die "an engine bridge or veth appeared in the host's network namespace"
fi

step "check: migrate completed"
mig=$(dc ps -aq migrate)
[ -n "$mig" ] || die "no migrate container"
wait_for 60 "migrate exits" sh -c "[ \"\$(docker inspect -f '{{.State.Status}}' $mig)\" = exited ]"
code=$(docker inspect -f '{{.State.ExitCode}}' "$mig")
[ "$code" = 0 ] || { docker logs "$mig" 2>&1 | tail -20; die "migrate exited $code"; }
docker logs "$mig" 2>&1 | grep -E 'tables migrated|stream ready' | sed 's/^/  /'

step "check: 3 snapshotter replicas healthy by their own health check"
all_healthy() {
  local want=$1 ids n=0
  ids=$(replicas)
  for id in $ids; do [ "$(health "$id")" = healthy ] && n=$((n + 1)); done
  [ "$n" -ge "$want" ]
}
wait_for 120 "3 snapshotter replicas healthy" all_healthy 3
for id in $(replicas); do echo "  $(cname "$id"): $(health "$id")"; done

step "check: the load generator runs"
load=$(dc ps -q load)
[ -n "$load" ] || die "load is not running"
wait_for 30 "load prints its throughput" sh -c "docker logs $load 2>&1 | grep -q 'saves/s'"
docker logs "$load" 2>&1 | grep 'saves/s' | tail -2 | sed 's/^/  /'

step "check: Prometheus (--profile observability) scrapes every replica"
dc --profile observability up -d prometheus 2>&1 | tail -2
prom=$(dc ps -q prometheus)
[ -n "$prom" ] || die "prometheus is not running"
promq() { in_netns curl -fsS --max-time 3 "http://$(cip "$prom"):9090/api/v1/$1" 2>/dev/null; }
targets_up() {
  local want=$1 out
  out=$(promq targets) || return 1
  [ "$(printf '%s' "$out" | grep -o '"health":"up"' | wc -l)" -eq "$want" ] &&
    [ "$(printf '%s' "$out" | grep -o '"health":"[a-z]*"' | wc -l)" -eq "$want" ]
}
wait_for 60 "Prometheus has 3 snapshotter targets, all up" targets_up 3
up_series() { promq 'query?query=up%7Bjob%3D%22snapshotter%22%7D' | grep -o '"instance":"[^"]*"[^]]*\]' | sed 's/"instance":"\([^"]*\)".*,"\([0-9]*\)"\]/\1 up=\2/'; }
up_series | sed 's/^/  /'
[ "$(up_series | grep -c 'up=1$')" -eq 3 ] || die "up is not 1 for each of the 3 replicas"
has_worker_data() { promq 'query?query=sum(evsnap_worker_notice_settled_total)' | grep -q '"value":\[[0-9.]*,"[1-9]'; }
wait_for 60 "evsnap_worker_notice_settled_total has data in Prometheus" has_worker_data
echo "  sum(evsnap_worker_notice_settled_total) = $(promq 'query?query=sum(evsnap_worker_notice_settled_total)' | grep -o '"value":\[[^]]*\]')"
rules_ok() { promq rules | grep -q '"name":"evsnap"' && promq rules | grep -q '"name":"EvsnapReplicaNotReady"' && ! promq rules | grep -q '"health":"err'; }
wait_for 30 "Prometheus loaded deploy/prometheus/evsnap-rules.yml, every rule healthy" rules_ok
# The recording rule has a value once a scrape carried the backlog gauge
# and the rule group ran after it (a few seconds after Prometheus starts).
backlog_rule() { promq 'query?query=evsnap%3Anotice_backlog%3Amax' | grep -q '"value":\['; }
wait_for 60 "the recording rule evsnap:notice_backlog:max has a value" backlog_rule
echo "  evsnap:notice_backlog:max = $(promq 'query?query=evsnap%3Anotice_backlog%3Amax' | grep -o '"value":\[[^]]*\]' | head -1 || true)"

step "check: every replica stores snapshots, for different aggregates"
each_stores() {
  for id in $(replicas); do [ "$(metric "$id" evsnap_worker_snapshot_written_total)" -gt 0 ] || return 1; done
}
wait_for 120 "every replica has evsnap_worker_snapshot_written_total > 0" each_stores
declare -A IDS
for id in $(replicas); do
  IDS[$id]=$(stored_ids "$id")
  echo "  $(cname "$id"): $(metric "$id" evsnap_worker_snapshot_written_total) snapshots written, $(printf '%s\n' "${IDS[$id]}" | grep -c .) aggregates in its log"
done
for a in "${!IDS[@]}"; do
  [ -n "${IDS[$a]}" ] || die "$(cname "$a") logged no 'snapshot stored' line"
  for b in "${!IDS[@]}"; do
    [ "$a" = "$b" ] || [ "${IDS[$a]}" != "${IDS[$b]}" ] || die "$(cname "$a") and $(cname "$b") stored the same aggregates"
  done
done

step "check: Prometheus evaluates every query of deploy/grafana/evsnap-dashboard.json"
# Each query once, with the variables at "All"; an error (a bad expression,
# a many-to-many match) fails. Queries with no data yet are fine: the
# dashboard's failure panels stay empty on a healthy stack.
prom_ip=$(cip "$prom")
nq=0 with_data=0
while IFS= read -r q; do
  out=$(in_netns curl -sS --max-time 5 --data-urlencode "query=$q" "http://$prom_ip:9090/api/v1/query") ||
    die "Prometheus did not answer the dashboard query: $q"
  printf '%s' "$out" | grep -q '"status":"success"' || die "Prometheus rejects the dashboard query: $q: $out"
  nq=$((nq + 1))
  printf '%s' "$out" | grep -q '"result":\[\]' || with_data=$((with_data + 1))
done < <(dashboard_queries deploy/grafana/evsnap-dashboard.json)
[ "$nq" -gt 0 ] || die "no query read from deploy/grafana/evsnap-dashboard.json"
echo "  $nq queries evaluated without error, $with_data of them with data"

step "check: one replica SIGKILLed, the others carry on"
set -- $(replicas)
victim=$1
shift
others=("$@")
vname=$(cname "$victim")
declare -A BEFORE
for id in "${others[@]}"; do BEFORE[$id]=$(metric "$id" evsnap_worker_notice_settled_total); done
# compose kill has no --index (it signals every replica of a service), so
# one container is killed by name, as `docker kill` would.
docker kill -s SIGKILL "$victim" >/dev/null
echo "  killed $vname"
others_carry_on() {
  for id in "${others[@]}"; do
    [ "$(metric "$id" evsnap_worker_notice_settled_total)" -gt "${BEFORE[$id]}" ] || return 1
  done
}
wait_for 60 "the other replicas handle notices after $vname was killed" others_carry_on
for id in "${others[@]}"; do echo "  $(cname "$id"): notices ${BEFORE[$id]} -> $(metric "$id" evsnap_worker_notice_settled_total)"; done
# Docker counts a kill as a manual stop, so `restart: unless-stopped` leaves
# it down; the `up --scale` below starts it again.
echo "  $vname: $(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$victim") (not restarted: a docker kill is a manual stop)"

step "check: --scale snapshotter=5 adds replicas that take work"
dc up -d --scale snapshotter=5 --no-recreate 2>&1 | tail -3
wait_for 120 "5 snapshotter replicas healthy" all_healthy 5
new=()
for id in $(replicas); do
  case " $victim ${others[*]} " in *" $id "*) ;; *) new+=("$id") ;; esac
done
[ ${#new[@]} -eq 2 ] || die "expected 2 new replicas, found ${#new[@]}"
new_take_work() {
  for id in "${new[@]}"; do [ "$(metric "$id" evsnap_worker_notice_settled_total)" -gt 0 ] || return 1; done
}
wait_for 60 "the 2 new replicas handle notices" new_take_work
for id in "${new[@]}"; do echo "  $(cname "$id"): notices $(metric "$id" evsnap_worker_notice_settled_total), snapshots $(metric "$id" evsnap_worker_snapshot_written_total)"; done
wait_for 60 "Prometheus has 5 snapshotter targets, all up" targets_up 5
echo "  Prometheus: 5 targets up"

step "check: a SIGTERMed replica drains and exits 0"
term=${new[1]}
tname=$(cname "$term")
# docker stop sends the image's stop signal (SIGTERM) and, being a stop,
# keeps the restart policy from starting it again.
docker stop -t 45 "$term" >/dev/null
state=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$term")
echo "  $tname: $state"
docker logs "$term" 2>&1 | grep -iE 'drain|stopp|shut' | tail -3 | sed 's/^/  /'
[ "$state" = "exited 0" ] || die "$tname exited with '$state' after SIGTERM, want 'exited 0'"

step "check: once the load stops, stats and verify report full coverage, no mismatch"
dc stop load 2>&1 | tail -1
# stats: "Account: N aggregates, M snapshots (...)"; full when M = N.
covered() {
  local out
  out=$(dc run --rm --no-deps snapshotter stats --type Account --exact 2>/dev/null) || return 1
  printf '%s\n' "$out" >"$RUN/stats.txt"
  printf '%s\n' "$out" | head -1 | awk '{ exit !($2 > 0 && $2 == $4) }'
}
rm -f "$RUN/stats.txt"
wait_for 150 "stats --type Account: every aggregate has a snapshot" covered
sed 's/^/  /' "$RUN/stats.txt" | head -24
verify_out=$(dc run --rm --no-deps snapshotter verify --type Account --sample 50 2>&1) ||
  { printf '%s\n' "$verify_out"; die "verify --type Account --sample 50 failed"; }
printf '%s\n' "$verify_out" | grep -vE '^\s*$' | grep -v 'level=' | sed 's/^/  /'
printf '%s\n' "$verify_out" | grep -qE '^\s*ok\s+50$' || die "verify did not find 50 ok snapshots"
for st in no_snapshot stale mismatch undecodable; do
  printf '%s\n' "$verify_out" | grep -qE "^\s*$st\s+0$" || die "verify reports $st snapshots"
done

step "check: --profile cluster: 3 NATS nodes, the stream at 3 replicas, every worker stores snapshots"
dc stop snapshotter 2>&1 | tail -1 # the single-node stack's workers: CPU for the cluster
dc --profile cluster up -d load-cluster snapshotter-cluster 2>&1 | tail -8
migc=$(dc ps -aq migrate-cluster)
[ -n "$migc" ] || die "no migrate-cluster container"
wait_for 120 "migrate-cluster exits" sh -c "[ \"\$(docker inspect -f '{{.State.Status}}' $migc)\" = exited ]"
code=$(docker inspect -f '{{.State.ExitCode}}' "$migc")
[ "$code" = 0 ] || { docker logs "$migc" 2>&1 | tail -20; die "migrate-cluster exited $code"; }
docker logs "$migc" 2>&1 | grep -E 'not placed yet|stream ready' | sed 's/^/  /'
docker logs "$migc" 2>&1 | grep -q 'stream ready: .*replicas 3' || die "migrate-cluster did not make the stream with 3 replicas"
cluster_replicas() { dc --profile cluster ps -q snapshotter-cluster; }
cluster_healthy() {
  local n=0 id
  for id in $(cluster_replicas); do [ "$(health "$id")" = healthy ] && n=$((n + 1)); done
  [ "$n" -ge 3 ]
}
wait_for 120 "3 snapshotter-cluster replicas healthy" cluster_healthy
cluster_each_stores() {
  local id
  for id in $(cluster_replicas); do [ "$(metric "$id" evsnap_worker_snapshot_written_total)" -gt 0 ] || return 1; done
}
wait_for 120 "every snapshotter-cluster replica stores snapshots" cluster_each_stores
for id in $(cluster_replicas); do echo "  $(cname "$id"): snapshots $(metric "$id" evsnap_worker_snapshot_written_total)"; done

step "docker compose down -v leaves no container, network or volume"
dc --profile observability --profile cluster down -v -t 30 2>&1 | tail -3
PROJECT_UP=
left=$(docker ps -aq --filter label=com.docker.compose.project=evsnap)
[ -z "$left" ] || die "containers left: $left"
left=$(docker network ls -q --filter label=com.docker.compose.project=evsnap)
[ -z "$left" ] || die "networks left: $left"
left=$(docker volume ls -q --filter label=com.docker.compose.project=evsnap)
[ -z "$left" ] || die "volumes left: $left"
echo "  no container, network or volume of project evsnap"
step_end
