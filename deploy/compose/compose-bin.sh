#!/usr/bin/env bash
# Builds the Compose v2 CLI plugin (docker compose) from its module source,
# once, into $CACHE/docker-config/cli-plugins/docker-compose; later runs reuse
# it. `go install github.com/docker/compose/v5/cmd@VERSION` is refused (its
# go.mod has exclude directives), so the downloaded module is copied and
# built in place: about 7 minutes on 2 cores.
set -euo pipefail
CACHE=${EVSNAP_COMPOSE_CACHE:-/var/cache/evsnap-compose}
VERSION=${EVSNAP_COMPOSE_VERSION:-v5.6.0}
out="$CACHE/docker-config/cli-plugins/docker-compose"
mkdir -p "$CACHE"
exec 9>"$CACHE/compose-bin.lock"
flock 9 # one build at a time; a second caller waits and then reuses it
if [ -x "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$VERSION" ]; then
  echo "compose $VERSION already built: $out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
dir=$(cd "$(mktemp -d)" && go mod download -json "github.com/docker/compose/v5@$VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "compose-bin: go mod download gave no source directory" >&2; exit 1; }
src="$CACHE/compose-src"
rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
cd "$src"
go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$VERSION" -o "$out.tmp" ./cmd
mv "$out.tmp" "$out"
echo "$VERSION" >"$out.version"
rm -rf "$src"
echo "compose $VERSION built: $out"
