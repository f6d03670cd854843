#!/usr/bin/env bash
# make fuzz: every fuzz target (fuzz/targets/) for FUZZ_TIME seconds each, one after another (one
# process: the machine is shared), with the C kernels built by clang with ASan + UBSan + libFuzzer
# coverage into .fuzz-build/lib (a copy of the package; the normal .venv build is never touched)
# and atheris' ASan runtime preloaded. Working corpora start from fuzz/corpus and live in
# .fuzz-build/corpus; crashing inputs go to .fuzz-build/artifacts/<target>/. Prints the
# executions per target; exits non-zero if any target found something.
# Usage: scripts/fuzz.sh PYTHON FUZZ_TIME [targets...]
set -uo pipefail
PY=$1; TIME=$2; shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.fuzz-build"
cd "$root"
if ! command -v clang >/dev/null; then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "fuzz: installing clang (Debian) for the instrumented build"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends clang || exit 1
fi
# the instrumented copy, rebuilt when any source of the package is newer
stamp="$out/lib/.built"
if [[ ! -f $stamp ]] || [[ -n $(find components/pythanos setup.py -newer "$stamp" \( -name '*.py' -o -name '*.c' -o -name '*.h' \) -print -quit) ]]; then
  echo "fuzz: building the ASan/UBSan copy of the package into $out/lib"
  rm -rf "$out/lib" "$out/tmp"
  # -fwrapv stays (Python's CFLAGS carry it into every production build: signed overflow wraps there)
  CC=clang LDSHARED="clang -shared" \
    CFLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer -g" \
    "$PY" setup.py -q build --build-base "$out/tmp" --build-lib "$out/lib" >"$out.build.log" 2>&1 \
    || { cat "$out.build.log"; exit 1; }
  touch "$stamp"
fi
runtime=$("$PY" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))')
[[ $# -gt 0 ]] || set -- $("$PY" -c 'import sys; sys.path.insert(0, "."); from fuzz.targets import TARGETS; print(*TARGETS)')
failed=()
for t in "$@"; do
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
  log="$out/$t.log"
  LD_PRELOAD="$runtime" PYTHONPATH="$out/lib" PYTHONMALLOC=malloc \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:symbolize=1" UBSAN_OPTIONS="print_stacktrace=1" \
    "$PY" fuzz/run.py "$t" -max_total_time="$TIME" -timeout=20 -rss_limit_mb=3072 -malloc_limit_mb=1024 \
      -max_len=8192 -print_final_stats=1 -artifact_prefix="$out/artifacts/$t/" \
      "$out/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  echo "fuzz: $t: ${runs:-?} executions in ${TIME}s, exit $rc"
  if [[ $rc -ne 0 ]]; then
    failed+=("$t")
    grep -E 'ERROR|Uncaught|Error|==[0-9]+==' "$log" | head -n 5
    echo "  log: $log; input: $(ls -t "$out/artifacts/$t" | head -n 1)"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then echo "fuzz: findings in ${failed[*]}"; exit 1; fi
