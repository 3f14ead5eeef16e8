#!/usr/bin/env bash
# Static checks of src/: the warning-free build (-Wall -Wextra -Werror, set
# in the Makefile), cppcheck and clang-tidy (checks in .clang-tidy).  As
# root it installs cppcheck and clang-tidy when missing.  Exits non-zero on
# any finding.  scripts/test.sh runs it first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

missing=()
for p in cppcheck clang-tidy; do
	command -v "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "${missing[@]}" >/dev/null
fi

cd "$ROOT"
status=0

echo "-- compiler warnings (-Werror)"
make -s clean PG_CONFIG="$PG_CONFIG"
make -s PG_CONFIG="$PG_CONFIG" >/dev/null || status=1

# variableScope is off: PostgreSQL's style (and -Wdeclaration-after-statement)
# declares variables at the top of a block, which this check argues against.
echo "-- cppcheck"
cppcheck --quiet --enable=warning,style,performance,portability \
	--suppress=variableScope --inline-suppr --error-exitcode=1 \
	-I src src/*.c || status=1

echo "-- clang-tidy"
if ! out=$(clang-tidy --quiet src/*.c -- -I src \
	-I "$("$PG_CONFIG" --includedir-server)" -D_GNU_SOURCE 2>&1); then
	status=1
fi
grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated' <<<"$out" || true

if [ "$status" -eq 0 ]; then
	echo "lint: clean"
fi
exit "$status"
