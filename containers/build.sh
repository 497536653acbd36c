#!/usr/bin/env bash
# Build the latentbench image from containers/Dockerfile with docker or podman, save it as an
# image archive and convert that to an Apptainer .sif (the file the config key `container`
# points at). Records tag, digest, sizes and times in containers/image.lock.json.
#
# Usage: containers/build.sh [--test-base] [--ci-workarounds] [--no-sif] [--keep-archive] [--help]
#   --test-base       build on localhost/latentbench-base:bookworm, a Debian bookworm made here
#                     with debootstrap when missing (needs root and debootstrap; no registry needed)
#   --ci-workarounds  the test machine's podman/apptainer workarounds (see the marked block below);
#                     same as LATENTBENCH_CI_WORKAROUNDS=1
#   --no-sif          stop after the image (no archive, no .sif)
#   --keep-archive    keep the image archive after the .sif is built (default: delete it, ~3 GB)
# Environment (all optional):
#   ENGINE        docker | podman (default: podman when installed, else docker)
#   BASE_IMAGE    base image (default: the Dockerfile's docker.io/library/python:3.11-slim-bookworm)
#   TAG           image tag (default: localhost/latentbench:<version in pyproject.toml>)
#   SIF           .sif output (default: containers/latentbench.sif)
#   CA_BUNDLE     CA bundle for a TLS-intercepting proxy, given to the build as the secret "ca"
#                 (used by pip/uv during the build, never stored in the image)
#   UV_SYNC_ARGS  extra `uv sync` arguments (Dockerfile build arg), e.g. "--extra gpu"
#   MIRROR        Debian mirror for --test-base (default: this machine's apt mirror)
#   SOURCE        repository URL for the org.opencontainers.image.source label
#                 (default: `git remote get-url origin`)
# Steps whose result is already there (base image, archive and .sif of the same image ID) are
# skipped, so an interrupted run resumes; the engine's layer cache makes an unchanged rebuild cheap.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TEST_BASE_TAG=localhost/latentbench-base:bookworm
LOCK=$HERE/image.lock.json
WORK=$HERE/.build                     # logs and scratch (git-ignored)

die() { echo "build.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH: $2"; }

test_base=0 sif_wanted=1 keep_archive=0 ci=${LATENTBENCH_CI_WORKAROUNDS:-0}
for arg in "$@"; do
    case $arg in
        --test-base) test_base=1 ;;
        --ci-workarounds) ci=1 ;;
        --no-sif) sif_wanted=0 ;;
        --keep-archive) keep_archive=1 ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (see --help)" ;;
    esac
done

if [[ -z ${ENGINE:-} ]]; then
    if command -v podman >/dev/null 2>&1; then ENGINE=podman
    elif command -v docker >/dev/null 2>&1; then ENGINE=docker
    else die "neither podman nor docker is installed (e.g. apt-get install podman)"; fi
fi
case $ENGINE in docker|podman) ;; *) die "ENGINE must be docker or podman, not '$ENGINE'" ;; esac
need "$ENGINE" "install it or set ENGINE=docker|podman"
need python3 "used to read pyproject.toml and write image.lock.json"

VERSION=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")
TAG=${TAG:-localhost/latentbench:$VERSION}
SIF=${SIF:-$HERE/latentbench.sif}
[[ $SIF = /* ]] || SIF=$PWD/$SIF
if [[ $test_base = 1 ]]; then BASE_IMAGE=${BASE_IMAGE:-$TEST_BASE_TAG}; fi
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $REVISION != unknown && -n $(git -C "$ROOT" status --porcelain -- pyproject.toml uv.lock README.md latentbench containers/Dockerfile 2>/dev/null) ]]; then
    REVISION=$REVISION-dirty
fi
SOURCE=${SOURCE:-$(git -C "$ROOT" remote get-url origin 2>/dev/null || echo unknown)}
mkdir -p "$WORK"

build_args=()
apptainer_build_args=()
# ---------------------------------------------------------------------------------------------
# BEGIN CI/test-machine workarounds (/work/shared/notes/infrastructure.md section 4). Not needed
# on an ordinary docker/podman host:
#  - podman: runc instead of crun (hybrid cgroups) and ulimits within the hard limits
#    (containers/ci-containers.conf), host network for the build;
#  - the TLS-intercepting proxy's CA (the host bundle) as the build secret "ca";
#  - the test-only Apptainer (containers/install-apptainer-test.sh) in user-namespace mode.
if [[ $ci = 1 ]]; then
    if [[ $ENGINE = podman ]]; then
        export CONTAINERS_CONF=$HERE/ci-containers.conf
        need runc "apt-get install runc (ci-containers.conf selects it)"
        build_args+=(--network host)
    fi
    CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    [[ -d /opt/apptainer-test/root/usr/bin ]] && export PATH=/opt/apptainer-test/root/usr/bin:$PATH
    export APPTAINER_USERNS=1
fi
# END CI/test-machine workarounds
# ---------------------------------------------------------------------------------------------

if [[ -n ${CA_BUNDLE:-} ]]; then
    [[ -r $CA_BUNDLE ]] || die "CA_BUNDLE '$CA_BUNDLE' is not readable"
    build_args+=(--secret "id=ca,src=$CA_BUNDLE")
fi
if [[ $ENGINE = podman ]]; then
    build_args+=(--ignorefile "$HERE/Dockerfile.dockerignore")
else
    export DOCKER_BUILDKIT=1          # build secrets; BuildKit reads containers/Dockerfile.dockerignore
fi
[[ -n ${BASE_IMAGE:-} ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[[ -n ${UV_SYNC_ARGS:-} ]] && build_args+=(--build-arg "UV_SYNC_ARGS=$UV_SYNC_ARGS")
if [[ $sif_wanted = 1 ]]; then
    APPTAINER=$(command -v apptainer || command -v singularity || true)
    [[ -n $APPTAINER ]] || die "apptainer (or singularity) not found on PATH: install it, run with --no-sif, or on the test machine run containers/install-apptainer-test.sh and pass --ci-workarounds"
fi

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
image_field() { "$ENGINE" image inspect --format "$2" "$1"; }

# --- 1. the test base: Debian bookworm by debootstrap (no registry needed) -------------------
base_seconds=""
if [[ ${BASE_IMAGE:-} = "$TEST_BASE_TAG" ]] && ! image_exists "$TEST_BASE_TAG"; then
    need debootstrap "apt-get install debootstrap (builds the test base $TEST_BASE_TAG)"
    [[ $(id -u) = 0 ]] || die "debootstrap of the test base needs root"
    MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    say "base: debootstrap bookworm from $MIRROR -> $TEST_BASE_TAG"
    t0=$(now)
    rootfs=$(mktemp -d "$WORK/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$MIRROR" > "$WORK/base.log" 2>&1 \
        || { tail -20 "$WORK/base.log"; die "debootstrap failed (log: $WORK/base.log)"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$ENGINE" import - "$TEST_BASE_TAG" >> "$WORK/base.log"
    rm -rf "$rootfs"; trap - EXIT
    base_seconds=$(since "$t0")
    say "base: ${base_seconds} s, $(image_field "$TEST_BASE_TAG" '{{.Size}}') bytes"
fi

# --- 2. the image ------------------------------------------------------------------------
say "image: $ENGINE build -> $TAG (base ${BASE_IMAGE:-Dockerfile default}, revision $REVISION)"
t0=$(now)
"$ENGINE" build -f "$HERE/Dockerfile" "${build_args[@]}" \
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE" -t "$TAG" "$ROOT" 2>&1 \
    | tee "$WORK/image.log"
[[ ${PIPESTATUS[0]} = 0 ]] || die "$ENGINE build failed (log: $WORK/image.log)"
build_seconds=$(since "$t0")
IMAGE_ID=$(image_field "$TAG" '{{.Id}}')
[[ $IMAGE_ID = sha256:* ]] || IMAGE_ID=sha256:$IMAGE_ID
IMAGE_SIZE=$(image_field "$TAG" '{{.Size}}')
if [[ $ENGINE = podman ]]; then
    DIGEST=$(image_field "$TAG" '{{.Digest}}')
else
    DIGEST=$(image_field "$TAG" '{{if .RepoDigests}}{{index .RepoDigests 0}}{{end}}')
    DIGEST=${DIGEST#*@}
fi
say "image: ${build_seconds} s, ${IMAGE_SIZE} bytes, id $IMAGE_ID, digest ${DIGEST:-none (not pushed)}"

# The image a previous run recorded, if this build replaced it and nothing else tags it: drop it
# (a failing rmi, e.g. for a tagged or used image, is fine).
previous_id=$([[ -s $LOCK ]] && python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("image_id", ""))' "$LOCK" || true)
if [[ -n $previous_id && $previous_id != "$IMAGE_ID" ]] && [[ -z $(image_field "$previous_id" '{{.RepoTags}}' 2>/dev/null | tr -d '[]') ]]; then
    "$ENGINE" rmi "$previous_id" >/dev/null 2>&1 && say "image: removed the previous untagged image $previous_id" || true
fi

# What a previous run recorded for this same image (to skip finished steps).
recorded() {
    [[ -s $LOCK ]] || return 0
    python3 - "$LOCK" "$IMAGE_ID" "$1" <<'PY'
import json, sys
lock = json.load(open(sys.argv[1]))
if lock.get("image_id") == sys.argv[2]:
    value = lock
    for key in sys.argv[3].split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if value is not None:
        print(value)
PY
}
file_size() { stat -c %s "$1" 2>/dev/null || echo -1; }

# --- 3. the image archive ----------------------------------------------------------------
if [[ $ENGINE = podman ]]; then
    ARCHIVE=$HERE/latentbench.oci.tar; SCHEME=oci-archive
else
    ARCHIVE=$HERE/latentbench.docker.tar; SCHEME=docker-archive
fi
save_seconds="" archive_size=""
sif_done=0
if [[ $sif_wanted = 1 && -s $SIF && $(recorded sif.size_bytes) = "$(file_size "$SIF")" ]]; then
    sif_done=1
    say "sif: $SIF is already built from $IMAGE_ID; skipping archive and conversion"
fi
if [[ $sif_wanted = 1 && $sif_done = 0 ]]; then
    if [[ -s $ARCHIVE && $(recorded archive.size_bytes) = "$(file_size "$ARCHIVE")" ]]; then
        say "archive: $ARCHIVE already holds $IMAGE_ID; skipping"
        save_seconds=$(recorded archive.save_seconds)
    else
        say "archive: $ENGINE save ($SCHEME) -> $ARCHIVE"
        t0=$(now)
        rm -f "$ARCHIVE" "$ARCHIVE.partial"
        if [[ $ENGINE = podman ]]; then
            podman save --format oci-archive -o "$ARCHIVE.partial" "$TAG"
        else
            docker save -o "$ARCHIVE.partial" "$TAG"
        fi
        mv "$ARCHIVE.partial" "$ARCHIVE"
        save_seconds=$(since "$t0")
    fi
    archive_size=$(file_size "$ARCHIVE")
    say "archive: ${save_seconds} s, ${archive_size} bytes"
fi

# --- 4. the .sif -------------------------------------------------------------------------
sif_seconds="" sif_sha="" sif_size=""
if [[ $sif_wanted = 1 && $sif_done = 0 ]]; then
    say "sif: $APPTAINER build $SCHEME://$ARCHIVE -> $SIF"
    t0=$(now)
    rm -f "$SIF.partial"
    "$APPTAINER" build --disable-cache --force "${apptainer_build_args[@]}" "$SIF.partial" "$SCHEME://$ARCHIVE" 2>&1 \
        | tee "$WORK/sif.log"
    [[ ${PIPESTATUS[0]} = 0 ]] || die "$APPTAINER build failed (log: $WORK/sif.log)"
    mv "$SIF.partial" "$SIF"
    sif_seconds=$(since "$t0")
    [[ $keep_archive = 1 ]] || { rm -f "$ARCHIVE"; say "archive: removed (--keep-archive keeps it)"; }
fi
if [[ $sif_wanted = 1 ]]; then
    sif_size=$(file_size "$SIF")
    sif_sha=$(recorded sif.sha256)
    [[ $sif_done = 1 && -n $sif_sha ]] || sif_sha=$(sha256sum "$SIF" | cut -d' ' -f1)
    [[ $sif_done = 0 ]] || sif_seconds=$(recorded sif.build_seconds)
    say "sif: ${sif_seconds} s, ${sif_size} bytes, sha256 $sif_sha"
fi

# --- 5. the record -----------------------------------------------------------------------
APPTAINER_VERSION=$([[ -n ${APPTAINER:-} ]] && "$APPTAINER" --version 2>/dev/null || true)
ENGINE_VERSION=$("$ENGINE" --version 2>/dev/null || true)
export LOCK TAG IMAGE_ID DIGEST IMAGE_SIZE VERSION REVISION ENGINE ENGINE_VERSION base_seconds \
    build_seconds ARCHIVE SCHEME archive_size save_seconds SIF sif_sha sif_size sif_seconds \
    APPTAINER_VERSION sif_wanted ROOT SOURCE
export BASE_IMAGE=${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}
export UV_SYNC_ARGS=${UV_SYNC_ARGS:-}
python3 - <<'PY'
import datetime, json, os

env = os.environ
old = {}
if os.path.exists(env["LOCK"]):
    with open(env["LOCK"]) as fh:
        old = json.load(fh)
same = old.get("image_id") == env["IMAGE_ID"]


def num(name, kind=float):
    return kind(env[name]) if env.get(name) else None


def rel(path):
    return os.path.relpath(path, env["ROOT"]) if path.startswith(env["ROOT"] + "/") else path


record = {
    "tag": env["TAG"],
    "image_id": env["IMAGE_ID"],
    "digest": env["DIGEST"] or None,
    "version": env["VERSION"],
    "revision": env["REVISION"],
    "source": env["SOURCE"],
    "base_image": env["BASE_IMAGE"],
    "uv_sync_args": env["UV_SYNC_ARGS"],
    "engine": env["ENGINE_VERSION"] or env["ENGINE"],
    "image_size_bytes": num("IMAGE_SIZE", int),
    "build_seconds": num("build_seconds"),
    "base_build_seconds": num("base_seconds") or old.get("base_build_seconds"),
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
}
if same:  # an unchanged image came from the layer cache: keep the times of the build that made it
    record["build_seconds"] = old.get("build_seconds", record["build_seconds"])
    record["date"] = old.get("date", record["date"])
if env["sif_wanted"] == "1":
    archive = {"path": rel(env["ARCHIVE"]), "format": env["SCHEME"],
               "size_bytes": num("archive_size", int), "save_seconds": num("save_seconds")}
    if archive["size_bytes"] is None and same:
        archive = old.get("archive", archive)
    record["archive"] = archive
    record["archive"]["kept"] = os.path.exists(env["ARCHIVE"])
    record["sif"] = {"path": rel(env["SIF"]), "sha256": env["sif_sha"], "size_bytes": num("sif_size", int),
                     "build_seconds": num("sif_seconds"), "apptainer": env["APPTAINER_VERSION"]}
elif same:
    for key in ("archive", "sif"):
        if key in old:
            record[key] = old[key]
tmp = env["LOCK"] + ".tmp"
with open(tmp, "w") as fh:
    json.dump(record, fh, indent=2)
    fh.write("\n")
os.replace(tmp, env["LOCK"])
PY
say "recorded in $LOCK"
