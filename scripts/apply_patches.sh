#!/usr/bin/env bash
# Apply (or, with --check, dry-run) patches/*.patch to an installed SGLang.
#
#   bash scripts/apply_patches.sh [--check] SITE_PACKAGES
#
# SITE_PACKAGES is the directory that holds the `sglang` package, e.g.
#   .venv/lib/python3.11/site-packages
#   "$(python -c 'import sglang, os; print(os.path.dirname(os.path.dirname(sglang.__file__)))')"
# The patches are unified diffs against SGLang v0.5.23's package files and are
# applied with `patch -p1` from SITE_PACKAGES. Nothing is written with --check,
# or when any patch would not apply: every patch is dry-run first.
#
# Exit status: 0 ok (with --check: the patches would apply); 2 bad usage;
# 3 SITE_PACKAGES missing or holds no sglang package; 4 wrong SGLang version;
# 5 already applied; 6 a patch does not apply cleanly; 7 `patch` not installed.
set -euo pipefail

PROG=apply_patches.sh
SUPPORTED_VERSION="0.5.23"
PATCH_DIR="$(cd "$(dirname "$0")/../patches" && pwd)"

die() {
  local code=$1
  shift
  echo "$PROG: error: $*" >&2
  exit "$code"
}

usage() {
  sed -n 2,15p "$0" | sed 's/^# \{0,1\}//'
}

CHECK=0
SITE=""
for a in "$@"; do
  case "$a" in
    --check) CHECK=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) die 2 "unknown option '$a' (see --help)" ;;
    *)
      [ -z "$SITE" ] || die 2 "more than one SITE_PACKAGES given ('$SITE', '$a')"
      SITE="$a"
      ;;
  esac
done
[ -n "$SITE" ] || die 2 "missing SITE_PACKAGES (see --help)"
[ -d "$SITE" ] || die 3 "SITE_PACKAGES '$SITE' is not a directory"
[ -f "$SITE/sglang/__init__.py" ] || die 3 "no sglang package in '$SITE' (expected $SITE/sglang/__init__.py)"
command -v patch >/dev/null 2>&1 || die 7 "the 'patch' program is not installed"

# The version without importing SGLang: its generated _version.py, else the dist-info.
version=""
if [ -f "$SITE/sglang/_version.py" ]; then
  version="$(sed -n "s/^__version__ = version = ['\"]\([^'\"]*\)['\"].*/\1/p" "$SITE/sglang/_version.py" | head -n 1)"
fi
if [ -z "$version" ]; then
  for meta in "$SITE"/sglang-*.dist-info/METADATA; do
    [ -f "$meta" ] || continue
    version="$(sed -n 's/^Version: //p' "$meta" | head -n 1)"
    break
  done
fi
[ -n "$version" ] || die 4 "cannot tell the SGLang version in '$SITE' (no sglang/_version.py or sglang-*.dist-info)"
[ "$version" = "$SUPPORTED_VERSION" ] || die 4 "SGLang $version found in '$SITE'; the patches are for $SUPPORTED_VERSION"

shopt -s nullglob
patches=("$PATCH_DIR"/*.patch)
[ "${#patches[@]}" -gt 0 ] || die 6 "no patches in $PATCH_DIR"

cd "$SITE"
for p in "${patches[@]}"; do
  name="$(basename "$p")"
  if patch -p1 -R --dry-run --force --silent < "$p" >/dev/null 2>&1; then
    die 5 "$name is already applied to '$SITE'"
  fi
  if ! out="$(patch -p1 --dry-run --force < "$p" 2>&1)"; then
    echo "$out" >&2
    die 6 "$name does not apply cleanly to '$SITE' (modified SGLang files?)"
  fi
done
if [ "$CHECK" = 1 ]; then
  for p in "${patches[@]}"; do echo "$PROG: $(basename "$p") applies cleanly to SGLang $version in $SITE"; done
  exit 0
fi
for p in "${patches[@]}"; do
  patch -p1 --force --silent --no-backup-if-mismatch < "$p" || die 6 "$(basename "$p") failed to apply"
  echo "$PROG: applied $(basename "$p") to SGLang $version in $SITE"
done
