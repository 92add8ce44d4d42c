#!/usr/bin/env bash
# Run HERE (the Debian 12 development machine), not on the GPU machine: downloads the .deb files of the build
# dependencies into .gpudeps/ (git-ignored through .git/info/exclude), so that scripts/gpu-check.sh can unpack them
# into a private prefix on a GPU machine whose image lacks them (it has no package registry). Carry the folder:
# run(command="bash scripts/gpu-check.sh gpu-out", carry=[".gpudeps"]).
#
# .gpudeps/openmpi/: Open MPI 4.1 (mpirun, mpicc, mpi.h, libmpi) and the run-time libraries that libmpi, mpirun and
# Open MPI's plugins load (the list is `ldd` of every ELF file of libopenmpi3, openmpi-bin and libpmix2, mapped to
# packages with `dpkg -S`), for the nccl step (docs/distributed.md: NCCL is bootstrapped through MPI). Left out:
# libc6, libgcc-s1, libstdc++6 and zlib1g (every image that runs python3 and nvcc has them), libhwloc-plugins (hwloc
# loads them only when present; they pull X11, libxml2 and OpenCL), openssh-client (mpirun on one node needs no
# ssh: gpu-check.sh sets the rsh agent to false) and the -dev packages libopenmpi-dev names for static linking.
# .gpudeps/openmpi/fallback/: libraries of a base system (libudev1, libuuid1, libatomic1) that gpu-check.sh adds to
# the library path only when the image lacks them, so that they never shadow the image's newer ones.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)  # .git is a file in a worktree
grep -qx '/.gpudeps/' "$exclude" 2>/dev/null || echo '/.gpudeps/' >> "$exclude"
mkdir -p .gpudeps/openmpi/fallback
cd .gpudeps
apt-get download libopenblas0-openmp libopenblas-openmp-dev libopenblas-dev libgfortran5 \
  nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 \
  libgtest-dev libgmock-dev pkgconf pkgconf-bin libpkgconf3
cd openmpi
apt-get download openmpi-bin openmpi-common libopenmpi3 libopenmpi-dev libpmix2 libhwloc15 \
  libevent-core-2.1-7 libevent-pthreads-2.1-7 libmunge2 libfabric1 libucx0 libpsm2-2 libpsm-infinipath1 \
  libibverbs1 ibverbs-providers librdmacm1 libnl-3-200 libnl-route-3-200 libnuma1
cd fallback
apt-get download libudev1 libuuid1 libatomic1
cd ../..
du -sh . openmpi
