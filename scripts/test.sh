#!/usr/bin/env bash
# The whole test suite.  On a fresh Debian 12 machine, as root:
#
#     scripts/test.sh
#
# installs what is missing (Debian packages, and the npm packages of the
# interop tests), builds and installs the extension, starts a throwaway
# PostgreSQL cluster and Redis on loopback, runs the pg_regress and
# isolation tests and the scripted tests (test/python), and stops the
# servers again.  It starts with the static checks (scripts/lint.sh:
# -Werror build, cppcheck, clang-tidy).  Exits non-zero if anything failed.
#
#     scripts/test.sh --valgrind
#
# runs every PostgreSQL process under valgrind's memcheck (suppressions for
# PostgreSQL's own padding writes in test/valgrind.supp), with the
# regression and isolation tests and the scripted tests that matter most
# for memory safety (hostile servers, fuzzing, session end, commit, views,
# examples, TLS, Redisson's format and channels; their time bounds grow, as a valgrind backend is tens of times
# slower); it fails if memcheck reports anything.
if [ "${1:-}" = "--valgrind" ]; then
	export REDLOCK_VALGRIND=1
fi
source "$(dirname "$0")/lib.sh"
# besides the extension's needs: what the examples in examples/ run with,
# valgrind, and libfaketime (a cluster whose clock is behind)
setup default-jdk-headless libpostgresql-jdbc-java libspring-context-java \
	libspring-transaction-java libspring-jdbc-java python3-sqlalchemy valgrind \
	faketime
install_node_modules

status=0

if [ -z "${REDLOCK_VALGRIND:-}" ]; then
	say "static checks (scripts/lint.sh)"
	"$ROOT/scripts/lint.sh" || status=1
	build_install	# lint.sh rebuilt the tree; install what it built
fi

say "pg_regress and isolation tests (make installcheck)"
if ! make -C "$ROOT" -s PG_CONFIG="$PG_CONFIG" installcheck; then
	status=1
	cat "$ROOT/regression.diffs" "$ROOT/output_iso/regression.diffs" 2>/dev/null || true
fi

say "scripted tests (test/python)"
pytest_args=(-q -p no:cacheprovider)
if [ -n "${REDLOCK_VALGRIND:-}" ]; then
	pytest_args+=(test_hostile.py test_session_end.py test_commit_order.py
		test_security.py test_introspection.py test_examples.py test_tls.py
		test_redisson.py::test_sql_lock_is_a_redisson_rlock
		test_redisson.py::test_a_key_of_the_other_format_is_held
		test_redisson.py::test_a_waiter_listens_on_the_channel_of_the_key_it_waits_for
		test_redisson.py::test_sql_release_wakes_a_redisson_waiter)
fi
(cd "$ROOT/test/python" && /usr/bin/python3 -m pytest "${pytest_args[@]}") || status=1

if [ -n "${REDLOCK_VALGRIND:-}" ]; then
	say "memcheck reports"
	stop_servers
	if [ -n "$(valgrind_reports)" ]; then
		status=1
		valgrind_reports | xargs cat
	else
		echo "none: memcheck is clean"
	fi
fi

if [ "$status" -eq 0 ]; then
	say "all tests passed"
else
	say "TESTS FAILED"
fi
exit "$status"
