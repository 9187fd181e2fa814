#!/usr/bin/env bash
# Prepares a machine for `make test`: system packages, a running PostgreSQL on
# 127.0.0.1:5432 (user postgres, trust auth over TCP) and the server's programs
# (initdb, pg_ctl, pg_basebackup) for tests that run clusters of their own, a running
# Redis on 127.0.0.1:6379, a running S3-compatible server (s3s-fs) on 127.0.0.1:9000,
# buf, the Python fal-client, clamd (ClamAV's daemon, which the malware-scanning tests
# start with a signature database of their own), the Helm and Kubernetes-schema libraries for the deployment checks,
# rustfmt and clippy, cargo-deny and cargo-cyclonedx (make lint, make sbom),
# and the benchmarks' peers and load tools (oha, libvips' vipsthumbnail, BullMQ), whose
# smoke runs are part of `make test`.
# Written for a fresh Debian 12 machine where we are root.
# Idempotent: whatever is already there is left alone, and nothing is printed when there
# is nothing to do. One line is printed per action taken.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
S3_HOST=127.0.0.1
S3_PORT=9000
S3_ROOT=/tmp/atelier-s3
S3_LOG=/tmp/atelier-s3.log
S3_WAIT_SECONDS=20
S3S_FS_VERSION=0.14.1
FAL_CLIENT_VERSION=1.0.3
OHA_VERSION=1.16.0
CARGO_DENY_VERSION=0.20.2
CARGO_CYCLONEDX_VERSION=0.5.7
HELM_PYTHON_SDK_VERSION=0.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
# The contract checks (make client-test): clients generated from the OpenAPI document
# and the protos, and Schemathesis; and standardwebhooks, the reference verifier the
# outgoing-webhook tests check signatures with (services/processing/tests/webhooks.rs).
CLIENT_TOOLS=(openapi-python-client==0.29.1 grpcio-tools==1.85.4 grpcio-reflection==1.85.1 schemathesis==4.32.5 standardwebhooks==1.3.0)
WAIT_SECONDS=30
APT_LOG=/tmp/atelier-deps-apt.log
CARGO_INSTALL_LOG=/tmp/atelier-deps-cargo-install.log

say() { echo "deps: $*"; }
die() {
    echo "deps: error: $*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
port_open() { timeout 2 bash -c ">/dev/tcp/$1/$2" 2>/dev/null; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Rust toolchain: rustup's toolchains are far newer than Debian's rustc, so it must be there.
have cargo || die "cargo not found: install Rust with rustup (https://rustup.rs) first"

# ---------------------------------------------------------------------------------------
# System packages, one apt-get update and one install, only when something is missing.
packages=()
fresh_postgres=0
# Something may already serve these ports (another install, a container): then only the
# clients are needed.
if port_open "$PG_HOST" "$PG_PORT"; then
    have psql && have pg_isready || packages+=(postgresql-client)
    # The restore drill (services/atelier/tests/backup.rs) and the chaos suite run
    # clusters of their own: initdb, pg_ctl, pg_basebackup from the server package.
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
elif ! have pg_ctlcluster || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    packages+=(postgresql)
    fresh_postgres=1
fi
if ! port_open "$REDIS_HOST" "$REDIS_PORT" && ! have redis-server; then
    packages+=(redis-server)
fi
have redis-cli || packages+=(redis-tools)
if ! have node; then
    packages+=(nodejs)
    have npm || packages+=(npm)
elif ! have npm; then
    packages+=(npm)
fi
have pkg-config || packages+=(pkg-config)
# Headless Chromium for the web app's end-to-end tests (driven by Playwright Test).
[[ -x /usr/bin/chromium ]] || packages+=(chromium)
# The thumbnail benchmark's peer.
have vipsthumbnail || packages+=(libvips-tools)
have curl || packages+=(curl)
# ClamAV's daemon: the malware-scanning tests start their own (libs/testkit/src/clamd.rs).
fresh_clamd=0
if [[ ! -x /usr/sbin/clamd ]]; then
    packages+=(clamav-daemon)
    fresh_clamd=1
fi
have cc || packages+=(gcc libc6-dev) # the linker cargo calls
installed ca-certificates || packages+=(ca-certificates)
fal_client_ok() { python3 -c 'import fal_client' >/dev/null 2>&1; }
# The pinned versions, usable by the python3 that `make helm-lint k8s-render` run.
deploy_tools_ok() {
    python3 - "$HELM_PYTHON_SDK_VERSION" "$KUBERNETES_VALIDATE_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
import helm_python, kubernetes_validate, yaml
assert version("helm-python-sdk") == sys.argv[1], version("helm-python-sdk")
assert version("kubernetes-validate") == sys.argv[2], version("kubernetes-validate")
helm_python.helm_sdk_version()  # loads the bundled Helm library
PY
}
# The pinned versions of CLIENT_TOOLS.
client_tools_ok() {
    python3 - "${CLIENT_TOOLS[@]}" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    assert version(name) == wanted, (name, version(name))
PY
}
if { ! have buf || ! fal_client_ok || ! deploy_tools_ok || ! client_tools_ok; } && ! python3 -m pip --version >/dev/null 2>&1; then
    packages+=(python3-pip)
fi

if ((${#packages[@]})); then
    have apt-get || die "missing ${packages[*]} and no apt-get to install them with"
    say "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${packages[@]}"; } \
        >"$APT_LOG" 2>&1; then
        tail -n 30 "$APT_LOG" >&2
        die "apt-get failed (full log: $APT_LOG)"
    fi
fi

# The Debian packages start clamd and freshclam where an init system runs: the tests need
# neither (they start clamd with a database of their own; freshclam would download the
# public one), so both are stopped and disabled.
if ((fresh_clamd)); then
    for service in clamav-daemon clamav-freshclam; do
        if have systemctl && systemctl is-enabled --quiet "$service" 2>/dev/null; then
            systemctl disable --now "$service" >/dev/null 2>&1 || true
            say "stopped and disabled $service"
        elif [[ -x /etc/init.d/$service ]] && /etc/init.d/$service status >/dev/null 2>&1; then
            /etc/init.d/$service stop >/dev/null 2>&1 || true
            say "stopped $service"
        fi
    done
fi

# ---------------------------------------------------------------------------------------
# PostgreSQL
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }
pg_login() {
    # Without a password: no PGPASSWORD, no ~/.pgpass.
    env -u PGPASSWORD PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
        psql -w -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atc 'select 1' \
        >/dev/null 2>&1
}
pg_version() {
    local v
    v=$(ls /etc/postgresql 2>/dev/null | sort -V | head -n 1 || true)
    [[ -n $v ]] || v=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
    echo "$v"
}

if ! pg_ready; then
    version=$(pg_version)
    [[ -n $version ]] || die "no PostgreSQL installation found under /usr/lib/postgresql"
    if [[ ! -d /etc/postgresql/$version/main ]]; then
        say "creating postgresql $version cluster main"
        pg_createcluster "$version" main >/dev/null
        fresh_postgres=1
    fi
    say "starting postgresql $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        die "pg_ctlcluster could not start postgresql $version/main (see /var/log/postgresql/)"
    for ((i = 0; i < WAIT_SECONDS; i++)); do
        pg_ready && break
        sleep 1
    done
    pg_ready || die "postgresql not ready on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s"
fi

if ((fresh_postgres)) || ! pg_login; then
    version=$(pg_version)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    [[ -f $hba ]] || die "cannot log in as postgres on $PG_HOST:$PG_PORT and no $hba to fix"
    if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba" ||
        ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+trust' "$hba"; then
        say "setting trust auth for local TCP connections in $hba"
        [[ -e $hba.orig ]] || cp "$hba" "$hba.orig"
        sed -E -i \
            -e 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+)[a-z0-9-]+#\1trust#' \
            -e 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+)[a-z0-9-]+#\1trust#' \
            "$hba"
        # No such lines at all: put ours first (the first matching line wins).
        for net in 127.0.0.1/32 ::1/128; do
            grep -Eq "^host[[:space:]]+all[[:space:]]+all[[:space:]]+${net//./\\.}[[:space:]]+trust" "$hba" ||
                sed -i "1i host all all $net trust" "$hba"
        done
        say "reloading postgresql $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload
        for ((i = 0; i < 10; i++)); do
            pg_login && break
            sleep 1
        done
    fi
    pg_login || die "cannot log in as postgres without a password on $PG_HOST:$PG_PORT (check $hba)"
fi

# ---------------------------------------------------------------------------------------
# Redis
redis_ok() { [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

if ! redis_ok; then
    say "starting redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
        --appendonly no --dir /tmp --logfile /tmp/redis-atelier.log >/dev/null ||
        die "redis-server failed to start (see /tmp/redis-atelier.log)"
    for ((i = 0; i < WAIT_SECONDS; i++)); do
        redis_ok && break
        sleep 1
    done
    redis_ok || die "redis not answering PONG on $REDIS_HOST:$REDIS_PORT after ${WAIT_SECONDS}s (see /tmp/redis-atelier.log)"
fi

# ---------------------------------------------------------------------------------------
# S3: s3s-fs (crates.io), a small S3-compatible server over a directory that checks SigV4
# signatures and presigned URLs. Keys must match the TEST_S3_* defaults in the Makefile.
if ! port_open "$S3_HOST" "$S3_PORT"; then
    cargo_bin=${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin
    s3s_fs=$(command -v s3s-fs || true)
    if [[ -z $s3s_fs && -x $cargo_bin/s3s-fs ]]; then
        s3s_fs=$cargo_bin/s3s-fs
    elif [[ -z $s3s_fs && -x $HOME/.cargo/bin/s3s-fs ]]; then
        s3s_fs=$HOME/.cargo/bin/s3s-fs
    fi
    if [[ -z $s3s_fs ]]; then
        say "installing s3s-fs $S3S_FS_VERSION (cargo install)"
        if ! cargo install -j2 --locked --features binary "s3s-fs@$S3S_FS_VERSION" \
            >"$CARGO_INSTALL_LOG" 2>&1; then
            tail -n 30 "$CARGO_INSTALL_LOG" >&2
            die "cargo install s3s-fs failed (full log: $CARGO_INSTALL_LOG)"
        fi
        s3s_fs=$cargo_bin/s3s-fs
        [[ -x $s3s_fs ]] || die "s3s-fs installed but not found at $s3s_fs"
    fi
    say "starting s3s-fs on $S3_HOST:$S3_PORT (data in $S3_ROOT)"
    mkdir -p "$S3_ROOT"
    nohup "$s3s_fs" --host "$S3_HOST" --port "$S3_PORT" \
        --access-key atelier-test --secret-key atelier-test-secret "$S3_ROOT" \
        >"$S3_LOG" 2>&1 </dev/null &
    for ((i = 0; i < S3_WAIT_SECONDS; i++)); do
        port_open "$S3_HOST" "$S3_PORT" && break
        sleep 1
    done
    port_open "$S3_HOST" "$S3_PORT" ||
        die "s3s-fs not answering on $S3_HOST:$S3_PORT after ${S3_WAIT_SECONDS}s (see $S3_LOG)"
fi

# ---------------------------------------------------------------------------------------
# buf (from PyPI: buf-bin)
if ! have buf; then
    say "installing buf (pip: buf-bin)"
    # Debian's python is "externally managed" (PEP 668); buf is a lone binary, so allow it.
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install -q buf-bin || die "pip install buf-bin failed"
    have pyenv && pyenv rehash
    hash -r
    have buf || die "buf-bin installed but buf is not on PATH ($PATH)"
fi

# ---------------------------------------------------------------------------------------
# fal-client (PyPI): the official Python client, run against the fal simulator by
# libs/fal-sim/tests/python_client.rs.
if ! fal_client_ok; then
    say "installing fal-client $FAL_CLIENT_VERSION (pip)"
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install -q "fal-client==$FAL_CLIENT_VERSION" || die "pip install fal-client failed"
    fal_client_ok || die "fal-client installed but python3 cannot import it"
fi

# ---------------------------------------------------------------------------------------
# Deployment checks (make helm-lint, make k8s-render): helm-python-sdk bundles Helm's Go
# library (lint and render the chart offline; there is no helm binary to install), and
# kubernetes-validate ships the Kubernetes schemas the rendered manifests are checked
# against. The overlays are rendered with kubectl's built-in kustomize.
if ! deploy_tools_ok; then
    say "installing helm-python-sdk $HELM_PYTHON_SDK_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION (pip)"
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install -q "helm-python-sdk==$HELM_PYTHON_SDK_VERSION" \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" || die "pip install helm-python-sdk kubernetes-validate failed"
    deploy_tools_ok || die "helm-python-sdk and kubernetes-validate installed but python3 cannot use them"
fi
if ! client_tools_ok; then
    say "installing ${CLIENT_TOOLS[*]} (pip)"
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install -q "${CLIENT_TOOLS[@]}" || die "pip install ${CLIENT_TOOLS[*]} failed"
    have pyenv && pyenv rehash
    hash -r
    client_tools_ok && have openapi-python-client && have schemathesis ||
        die "${CLIENT_TOOLS[*]} installed but python3 cannot use them"
fi
have kubectl || say "warning: kubectl not found: make k8s-render needs it (kubectl kustomize)"

# ---------------------------------------------------------------------------------------
# Benchmark tools: oha (crates.io), the HTTP load generator the status benchmark drives;
# the BullMQ peer of the queue benchmark (npm, pinned by its package-lock.json).
cargo_bin=${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin
if ! have oha && [[ ! -x $cargo_bin/oha ]]; then
    say "installing oha $OHA_VERSION (cargo install)"
    if ! cargo install -j2 --locked "oha@$OHA_VERSION" >"$CARGO_INSTALL_LOG" 2>&1; then
        tail -n 30 "$CARGO_INSTALL_LOG" >&2
        die "cargo install oha failed (full log: $CARGO_INSTALL_LOG)"
    fi
fi
# Dependency hygiene (make lint, make sbom): cargo-deny and cargo-cyclonedx, pinned to
# versions that build on the project's Rust.
cargo_tool() { # <cargo subcommand> <crate> <version>
    local installed
    installed=$(cargo "$1" --version 2>/dev/null || true)
    [[ $installed == *" $3" ]] && return
    say "installing $2 $3 (cargo install)"
    if ! cargo install -j2 --locked "$2@$3" >"$CARGO_INSTALL_LOG" 2>&1; then
        tail -n 30 "$CARGO_INSTALL_LOG" >&2
        die "cargo install $2 failed (full log: $CARGO_INSTALL_LOG)"
    fi
}
cargo_tool deny cargo-deny "$CARGO_DENY_VERSION"
cargo_tool cyclonedx cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for peer in "$repo"/libs/*/benches/*/package-lock.json; do
    [[ -f $peer ]] || continue
    dir=$(dirname "$peer")
    if [[ ! -f $dir/node_modules/.package-lock.json || $peer -nt $dir/node_modules/.package-lock.json ]]; then
        say "installing the benchmark peer in ${dir#"$repo"/} (npm ci)"
        (cd "$dir" && npm ci --no-audit --no-fund >/dev/null 2>&1) || die "npm ci failed in $dir"
    fi
done

# ---------------------------------------------------------------------------------------
# rustfmt and clippy
components=()
cargo fmt --version >/dev/null 2>&1 || components+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || components+=(clippy)
if ((${#components[@]})); then
    have rustup || die "cargo ${components[*]} missing and no rustup to add them with"
    say "adding rust components ${components[*]}"
    rustup component add "${components[@]}" >/dev/null 2>&1 || die "rustup component add ${components[*]} failed"
fi
