#!/usr/bin/env bash
# Runs a program on N ranks under mpirun, for CTest (tests/test_*_mpi.cpp run with 2 and 4 ranks) and by hand:
#   scripts/mpi-test.sh 4 build/test_communicator_mpi
# --oversubscribe: more ranks than cores (the 2-core CI machine); --bind-to none: no rank pinned to one core.
# Exits 77 (CTest's "skipped") when mpirun is not installed.
set -euo pipefail
np="$1"
shift
if ! command -v mpirun >/dev/null 2>&1; then
  echo "mpirun not found: skipped (apt install openmpi-bin libopenmpi-dev, or scripts/install-deps.sh)"
  exit 77
fi
# CI runs as root; Open MPI refuses that unless told. One OpenMP thread per rank: the ranks share the cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# A test that fails on some ranks only leaves the others waiting in a collective: the watchdog ends them.
export MINISEQ_DIST_TIMEOUT="${MINISEQ_DIST_TIMEOUT:-60}"
exec mpirun --oversubscribe --bind-to none -np "$np" "$@"
