#!/usr/bin/env bash
# The whole test suite.  On a fresh Debian 12 machine, as root:
#
#     scripts/test.sh
#
# installs what is missing (Debian packages, and the npm packages of the
# interop tests), builds and installs the extension, starts a throwaway
# PostgreSQL cluster and Redis on loopback, runs the pg_regress and
# isolation tests and the scripted tests (test/python), and stops the
# servers again.  Exits non-zero if anything failed.
source "$(dirname "$0")/lib.sh"
# besides the extension's needs: what the examples in examples/ run with
setup default-jdk-headless libpostgresql-jdbc-java libspring-context-java \
	libspring-transaction-java libspring-jdbc-java python3-sqlalchemy
install_node_modules

status=0

say "pg_regress and isolation tests (make installcheck)"
if ! make -C "$ROOT" -s PG_CONFIG="$PG_CONFIG" installcheck; then
	status=1
	cat "$ROOT/regression.diffs" "$ROOT/output_iso/regression.diffs" 2>/dev/null || true
fi

say "scripted tests (test/python)"
(cd "$ROOT/test/python" && /usr/bin/python3 -m pytest -q -p no:cacheprovider .) || status=1

if [ "$status" -eq 0 ]; then
	say "all tests passed"
else
	say "TESTS FAILED"
fi
exit "$status"
