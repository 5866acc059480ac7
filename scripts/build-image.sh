#!/usr/bin/env bash
# Build the lora-syncer image with podman, with no container registry: the Python base is a
# Debian root filesystem made here with debootstrap, and pip inside the build reads only wheels
# fetched beforehand on this machine (the build itself runs with no network).
#
# Usage: bash scripts/build-image.sh [--tag NAME] [--refresh-base] [--print-mirror]
#   --refresh-base  make the base again (Debian security updates), dropping the cached tarball and image
#   --print-mirror  print the Debian mirror debootstrap would use, and exit
#
# 1. Base (once): `debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3`
#    from the Debian mirror this machine's apt uses, saved as a tarball in the cache directory and
#    `podman import`ed as $BASE_TAG. Later runs reuse the local image, or re-import the tarball.
#    A second one, the builder's, adds python3-dev, gcc and libc6-dev (mypyc compiles the proxy's
#    per-request modules in the build; the runtime image carries no compiler).
# 2. Wheels (once per dependency set): `pip download` on this machine, with its own pip
#    configuration, of the project's dependencies (with the `fast` extra), build backend and mypy,
#    for the base's Python version and glibc, into the cache directory.
# 3. Image (once per tree): the repository's Dockerfile, `--build-arg PYTHON_IMAGE=$BASE_TAG` (and BUILD_IMAGE), with
#    the wheels mounted at /wheelhouse and a pip.conf pointing at them mounted at /etc/pip.conf,
#    `--network none`. The image is tagged localhost/lora-syncer:tree-<hash of the build inputs and
#    the base> (and --tag NAME); an existing image with that tag is reused. The three newest tree
#    builds are kept, older ones removed.
# Prints the image's own layer size (what it adds on top of the base) and, last, `image <tag>`.
#
# Environment:
#   LORA_SYNCER_CACHE            cache directory (default ~/.cache/lora-syncer, or under $XDG_CACHE_HOME)
#   LORA_SYNCER_DEBIAN_MIRROR    Debian mirror for debootstrap (default: read from apt's sources)
#   LORA_SYNCER_DEBIAN_SUITE     Debian suite of the base (default bookworm)
#   LORA_SYNCER_APT_DIR          where apt's sources are read from (default /etc/apt)
#   LORA_SYNCER_BASE_IMAGE       the base's local tag (default localhost/lora-syncer-base:<suite>)
#   LORA_SYNCER_BUILD_BASE_IMAGE the builder base's local tag (default localhost/lora-syncer-build:<suite>)
#   PYTHON                       interpreter that runs `pip download` (default python3; needs pip)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

EXTRA_TAG=""
REFRESH_BASE=0
PRINT_MIRROR=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --tag) EXTRA_TAG=${2:?--tag needs a name}; shift 2 ;;
    --refresh-base) REFRESH_BASE=1; shift ;;
    --print-mirror) PRINT_MIRROR=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (usage: bash scripts/build-image.sh [--tag NAME] [--refresh-base] [--print-mirror])" >&2; exit 2 ;;
  esac
done

SUITE=${LORA_SYNCER_DEBIAN_SUITE:-bookworm}
APT_DIR=${LORA_SYNCER_APT_DIR:-/etc/apt}
CACHE=${LORA_SYNCER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lora-syncer}
BASE_TAG=${LORA_SYNCER_BASE_IMAGE:-localhost/lora-syncer-base:$SUITE}
BASE_TAR=$CACHE/base/debian-$SUITE-minbase-python3.tar
BUILD_BASE_TAG=${LORA_SYNCER_BUILD_BASE_IMAGE:-localhost/lora-syncer-build:$SUITE}
BUILD_BASE_TAR=$CACHE/base/debian-$SUITE-minbase-python3-build.tar
PYTHON=${PYTHON:-python3}
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
# Containers get explicit limits: runc cannot raise the defaults podman asks for in some sandboxes.
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=1000:1000)

# The URI of the apt source that serves the suite itself (not -updates/-security), from either
# sources format. Nothing is hard-coded: whatever mirror this machine's apt uses.
debian_mirror() {
  local f
  for f in "$APT_DIR/sources.list" "$APT_DIR"/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # deb [options] URI SUITE COMPONENTS...
    awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite) { print $i; exit } }' "$f"
  done
  for f in "$APT_DIR"/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    # deb822 stanzas: Types / URIs / Suites (+ Enabled: no)
    awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      { types = ""; uris = ""; suites = ""; enabled = "yes"
        for (j = 1; j <= NF; j++) {
          if ($j ~ /^Types:/) types = $j; else if ($j ~ /^URIs:/) uris = $j
          else if ($j ~ /^Suites:/) suites = $j; else if ($j ~ /^Enabled:/) enabled = tolower($j) }
        if (types ~ /[ \t]deb([ \t]|$)/ && enabled !~ /no/ && (" " suites " ") ~ ("[ \t]" suite "[ \t]")) {
          sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/); print u[1]; exit } }' "$f"
  done
}

mirror() { [[ -n ${LORA_SYNCER_DEBIAN_MIRROR:-} ]] && echo "$LORA_SYNCER_DEBIAN_MIRROR" || debian_mirror | head -n 1; }
if [[ $PRINT_MIRROR -eq 1 ]]; then
  m=$(mirror)
  [[ -n $m ]] || { echo "error: no apt source for $SUITE in $APT_DIR/sources.list{,.d}; set LORA_SYNCER_DEBIAN_MIRROR" >&2; exit 1; }
  echo "$m"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || { echo "error: build-image.sh runs rootful podman and debootstrap: run it as root" >&2; exit 1; }
ensure_tools "building the image" podman:podman runc:runc
"$PYTHON" -m pip --version >/dev/null 2>&1 || { echo "error: $PYTHON has no pip; set PYTHON to an interpreter with pip (python3 -m ensurepip)" >&2; exit 1; }

mkdir -p "$CACHE/base" "$CACHE/wheels"
# One build at a time (the test and a manual run share the cache).
if command -v flock >/dev/null 2>&1; then
  exec 8>"$CACHE/build-image.lock"
  flock 8
fi

# --- 1. the base -----------------------------------------------------------------------------------

# make_base TAG TARBALL PACKAGES: the Debian root filesystem with PACKAGES, imported as TAG (once).
make_base() {
  local tag=$1 tar=$2 packages=$3
  if [[ $REFRESH_BASE -eq 1 ]]; then
    rm -f "$tar"
    ! "${PODMAN[@]}" image exists "$tag" || "${PODMAN[@]}" untag "$tag" # images built on it keep their layers
  fi
  "${PODMAN[@]}" image exists "$tag" && return 0
  if [[ ! -s $tar ]]; then
    ensure_tools "making the image's base" debootstrap:debootstrap
    MIRROR=$(mirror)
    [[ -n $MIRROR ]] || {
      echo "error: no apt source for $SUITE in $APT_DIR/sources.list{,.d}; set LORA_SYNCER_DEBIAN_MIRROR to a Debian mirror URL" >&2
      exit 1
    }
    KEYRING=()
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] && KEYRING=(--keyring /usr/share/keyrings/debian-archive-keyring.gpg)
    ROOTFS=$(mktemp -d "$CACHE/base/rootfs.XXXXXX")
    trap 'rm -rf "$ROOTFS"' EXIT
    echo "making $tag: debootstrap $SUITE from $MIRROR with $packages (once; a minute or two)..."
    t0=$SECONDS
    if ! debootstrap --variant=minbase --include="$packages" \
      "${KEYRING[@]}" "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/base/debootstrap.log" 2>&1; then
      tail -n 20 "$CACHE/base/debootstrap.log" >&2
      echo "error: debootstrap failed (log: $CACHE/base/debootstrap.log); check the mirror or set LORA_SYNCER_DEBIAN_MIRROR" >&2
      exit 1
    fi
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/* \
      "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
    tar --numeric-owner -C "$ROOTFS" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$ROOTFS"
    trap - EXIT
    echo "root filesystem: $tar ($(du -h "$tar" | cut -f1), $((SECONDS - t0)) s)"
  fi
  "${PODMAN[@]}" import --quiet --change 'CMD ["python3"]' "$tar" "$tag" >/dev/null
  echo "base image: $tag (imported from $tar)"
}

PY_PACKAGES=python3,python3-venv,python3-pip,python-is-python3
make_base "$BASE_TAG" "$BASE_TAR" "$PY_PACKAGES"
# The builder stage's base: the same Python, plus what mypyc needs to compile the proxy.
make_base "$BUILD_BASE_TAG" "$BUILD_BASE_TAR" "$PY_PACKAGES,python3-dev,gcc,libc6-dev"
BUILD_BASE_ID=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$BUILD_BASE_TAG")
BASE_ID=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$BASE_TAG")

# --- 2. the wheels ---------------------------------------------------------------------------------

# The base's Python version, glibc and machine, to download wheels that run there.
read -r PY_VER GLIBC ARCH < <("${PODMAN[@]}" run --rm --network none "${ULIMITS[@]}" "$BASE_TAG" python3 -c \
  'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1], platform.machine())') || true
[[ -n $PY_VER && $GLIBC == 2.* ]] || { echo "error: could not read Python and glibc versions from $BASE_TAG" >&2; exit 1; }

REQS=$("$PYTHON" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as fh:
    meta = tomllib.load(fh)
reqs = [*meta["build-system"]["requires"], *meta["project"]["dependencies"],
        *meta["project"]["optional-dependencies"]["fast"],
        *meta["project"]["optional-dependencies"]["compile"]]
print("\n".join(reqs))
EOF
)
PLATFORMS=(--platform "manylinux2014_$ARCH" --platform "linux_$ARCH")
for ((minor = 17; minor <= ${GLIBC#2.}; minor++)); do PLATFORMS+=(--platform "manylinux_2_${minor}_$ARCH"); done
WHEELS_KEY=$(printf '%s\n' "$REQS" "$PY_VER" "$GLIBC" "$ARCH" | sha256sum | cut -c1-16)
WHEELHOUSE=$CACHE/wheels/$WHEELS_KEY
if [[ ! -f $WHEELHOUSE/.complete ]]; then
  echo "fetching wheels for Python $PY_VER / glibc $GLIBC / $ARCH into $WHEELHOUSE ..."
  rm -rf "$WHEELHOUSE"
  mkdir -p "$WHEELHOUSE"
  printf '%s\n' "$REQS" >"$WHEELHOUSE/requirements.txt"
  if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$WHEELHOUSE" \
    --only-binary=:all: --implementation cp --python-version "$PY_VER" "${PLATFORMS[@]}" \
    -r "$WHEELHOUSE/requirements.txt" >"$WHEELHOUSE.log" 2>&1; then
    grep -v "is ignored" "$WHEELHOUSE.log" | tail -n 20 >&2
    echo "error: pip download of the image's dependencies failed (log: $WHEELHOUSE.log); check this machine's pip configuration" >&2
    exit 1
  fi
  touch "$WHEELHOUSE/.complete"
fi

# --- 3. the image ----------------------------------------------------------------------------------

VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
# Exactly the files the Dockerfile copies (what .dockerignore lets through), bytecode excluded.
mapfile -t FILES < <({ printf '%s\n' Dockerfile .dockerignore setup.py pyproject.toml README.md
  find lora_syncer -type f ! -path '*/__pycache__/*' ! -name '*.pyc'; } | LC_ALL=C sort)
tar -cf - "${FILES[@]}" | tar -C "$CONTEXT" -xf -
TREE=$( { (cd "$CONTEXT" && sha256sum "${FILES[@]}"); echo "$BASE_ID $BUILD_BASE_ID $WHEELS_KEY $VERSION"; } | sha256sum | cut -c1-16)
TAG=localhost/lora-syncer:tree-$TREE

if "${PODMAN[@]}" image exists "$TAG"; then
  echo "image $TAG already built from this tree; reusing it"
else
  printf '[global]\nno-index = true\nfind-links = /wheelhouse\n' >"$CONTEXT/.pip.conf"
  echo "building $TAG (lora-syncer $VERSION on $BASE_TAG)..."
  t0=$SECONDS
  if ! "${PODMAN[@]}" build --network none --pull=never --layers=false "${ULIMITS[@]}" \
    --build-arg "PYTHON_IMAGE=$BASE_TAG" --build-arg "BUILD_IMAGE=$BUILD_BASE_TAG" --build-arg "VERSION=$VERSION" \
    -v "$WHEELHOUSE:/wheelhouse:ro" -v "$CONTEXT/.pip.conf:/etc/pip.conf:ro" \
    --label "org.lora-syncer.tree=$TREE" -t "$TAG" -f "$CONTEXT/Dockerfile" "$CONTEXT" >"$CACHE/build.log" 2>&1; then
    tail -n 30 "$CACHE/build.log" >&2
    echo "error: podman build failed (log: $CACHE/build.log)" >&2
    exit 1
  fi
  echo "built in $((SECONDS - t0)) s"
  # Keep the three newest tree builds; older ones only fill the disk (images in use stay).
  "${PODMAN[@]}" images --sort created --filter 'reference=localhost/lora-syncer:tree-*' \
    --format '{{.Repository}}:{{.Tag}}' | tail -n +4 | while read -r old; do
    "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true
  done
fi
[[ -z $EXTRA_TAG ]] || "${PODMAN[@]}" tag "$TAG" "$EXTRA_TAG"

# The image's own layers: everything it adds on top of the base.
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$TAG")
base_size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE_TAG")
echo "image's own layers: $(((size - base_size) / 1024 / 1024)) MiB ($((size - base_size)) bytes) on a $((base_size / 1024 / 1024)) MiB base"
echo "image $TAG"
