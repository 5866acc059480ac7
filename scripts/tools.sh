#!/usr/bin/env bash
# Shared helper, sourced by the other scripts: make sure command-line tools exist.
#
#   source scripts/tools.sh
#   ensure_tools "what needs them" cmd:debian-package [cmd:debian-package ...]
#
# A tool already on PATH (or in /usr/sbin, /sbin) costs nothing: apt is only run for what is
# missing. When root on a machine with apt-get, the missing packages are installed (one
# `apt-get update`, once per shell); otherwise, or when that install fails, it prints one line
# naming the packages to install and returns 1 (callers run with `set -e`, so that is fatal).
# LORA_SYNCER_NO_APT=1 turns the apt install off (check only).

_LORA_SYNCER_APT_UPDATED=${_LORA_SYNCER_APT_UPDATED:-0}

# has_tool CMD: CMD is runnable (also looks in the sbin directories, which a non-root PATH may lack).
has_tool() {
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/sbin/$1" ]]
}

ensure_tools() {
  local purpose=$1
  shift
  local spec missing_cmds=() missing_pkgs=()
  for spec in "$@"; do
    if ! has_tool "${spec%%:*}"; then
      missing_cmds+=("${spec%%:*}")
      missing_pkgs+=("${spec#*:}")
    fi
  done
  [[ ${#missing_cmds[@]} -eq 0 ]] && return 0
  # Several commands can come from one package (prometheus + promtool).
  local pkgs
  pkgs=$(printf '%s\n' "${missing_pkgs[@]}" | sort -u | tr '\n' ' ')
  pkgs=${pkgs% }
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 && [[ "${LORA_SYNCER_NO_APT:-0}" != 1 ]]; then
    echo "installing for $purpose: $pkgs"
    local log
    log=$(mktemp)
    # shellcheck disable=SC2086  # $pkgs is a list of package names
    if { [[ $_LORA_SYNCER_APT_UPDATED == 1 ]] || apt-get update -qq >"$log" 2>&1; } &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >>"$log" 2>&1; then
      _LORA_SYNCER_APT_UPDATED=1
      rm -f "$log"
    else
      tail -n 5 "$log" >&2
      rm -f "$log"
      echo "error: apt-get could not install $pkgs (needed for $purpose); install them by hand" >&2
      return 1
    fi
  else
    echo "error: missing ${missing_cmds[*]} (needed for $purpose); install the Debian/Ubuntu packages: $pkgs" >&2
    return 1
  fi
  for spec in "$@"; do
    if ! has_tool "${spec%%:*}"; then
      echo "error: ${spec%%:*} still missing after installing ${spec#*:} (needed for $purpose)" >&2
      return 1
    fi
  done
}
