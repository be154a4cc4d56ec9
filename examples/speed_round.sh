#!/usr/bin/env bash
# One round of the speed tables of docs/benchmarks.md: the peer and likewise run one after the other on the same
# file, so each ratio compares two runs of the same minutes (the machines of this kind drift by up
# to a factor of two within minutes; ratios from different rounds do not compare).
#
#   examples/speed_round.sh PEERS FILE [LIKEWISE]
#
# PEERS: the peers' script (`peers.sh`, run as `PEERS embed FILE 2`: sentence-transformers on 2
# threads); FILE: one text per line; LIKEWISE: the binary (default target/release/likewise; build it
# with `cargo build --release`). In this order: the peer, `likewise bench embed FILE`, the whole
# `likewise embed FILE` process, then both again in bf16 where this CPU has AVX512-BF16 or AMX.
# Prints the CPU, the time and one table row: tokens/s (word pieces, [CLS] and [SEP] included) and
# the ratio to the peer; then one 25-word passage's latency (`bench query`, three medians of 300).
# Extra likewise options (`--kernels avx2`, `--model …`) go in LIKEWISE_ARGS; the peer's
# environment (e.g. holding PyTorch to AVX2) is the caller's.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" >&2
  exit 2
fi
peers=$1
file=$2
likewise=${3:-target/release/likewise}
read -r -a extra <<< "${LIKEWISE_ARGS:-}"
[ -x "$likewise" ] || { echo "speed_round: no binary at $likewise (cargo build --release)" >&2; exit 2; }
[ -r "$file" ] || { echo "speed_round: cannot read $file" >&2; exit 2; }
export LC_NUMERIC=C

field() { # field NAME JSON: a number from one line of flat JSON
  sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" <<< "$2"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
whole() { # whole PRECISION: seconds of the whole `likewise embed FILE` process
  local start end
  start=$(date +%s.%N)
  "$likewise" "${extra[@]}" --precision "$1" embed "$file" > /dev/null
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
}

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
family=$(grep -m1 '^cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')
model=$(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')
echo "$cpu (family $family, model $model), $(date -u '+%Y-%m-%d %H:%M UTC'), $file"

peer_json=$("$peers" embed "$file" 2 | tail -1)
peer=$(field tokens_per_s "$peer_json")
[ -n "$peer" ] || { echo "speed_round: no tokens_per_s in the peer's output: $peer_json" >&2; exit 1; }
row="| $(printf "%.0f" "$peer")"
bf16=no
if grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo; then bf16=yes; fi
for precision in f32 bf16; do
  if [ "$precision" = bf16 ] && [ $bf16 = no ]; then
    row="$row | — | —"
    continue
  fi
  bench=$("$likewise" "${extra[@]}" --precision "$precision" bench embed "$file" | tail -1)
  rate=$(field tokens_per_s "$bench")
  tokens=$(field tokens "$bench")
  kernels=$(sed -n 's/.*"kernels":"\([^"]*\)".*/\1/p' <<< "$bench")
  seconds=$(whole "$precision")
  whole_rate=$(awk -v t="$tokens" -v s="$seconds" 'BEGIN { printf "%.0f", t / s }')
  row="$row | $(printf "%.0f" "$rate") ($(ratio "$rate" "$peer")×, $kernels) | $seconds s: $(printf "%.0f" "$whole_rate") ($(ratio "$whole_rate" "$peer")×)"
done
echo "| peer | f32 bench embed | f32 whole process | bf16 bench embed | bf16 whole process |"
echo "|---|---|---|---|---|"
echo "$row |"
# One 25-word passage, model loaded: three medians of 300 runs per precision.
for precision in f32 bf16; do
  if [ "$precision" = bf16 ] && [ $bf16 = no ]; then continue; fi
  medians=()
  for _ in 1 2 3; do
    query=$("$likewise" "${extra[@]}" --precision "$precision" bench query --runs 300 | tail -1)
    medians+=("$(field median_ms "$query")")
  done
  echo "one passage, $precision, bench query median of 300: ${medians[0]} / ${medians[1]} / ${medians[2]} ms"
done
