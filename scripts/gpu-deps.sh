#!/usr/bin/env bash
# Run HERE (the Debian 12 development machine), not on the GPU machine: downloads the .deb files of the build
# dependencies into .gpudeps/ (git-ignored through .git/info/exclude), so that scripts/gpu-check.sh can unpack them
# into a private prefix on a GPU machine whose image lacks them (it has no package registry). Carry the folder:
# run(command="bash scripts/gpu-check.sh gpu-out", carry=[".gpudeps"]).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpudeps/' .git/info/exclude 2>/dev/null || echo '/.gpudeps/' >> .git/info/exclude
mkdir -p .gpudeps
cd .gpudeps
apt-get download libopenblas0-openmp libopenblas-openmp-dev libopenblas-dev libgfortran5 \
  nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 \
  libgtest-dev libgmock-dev pkgconf pkgconf-bin libpkgconf3
du -sh .
