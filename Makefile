# redlock: PGXS build.  "make && make install" builds against the
# pg_config on PATH (or PG_CONFIG=...); "make installcheck" runs the
# pg_regress and isolation tests against a running server whose
# redlock.servers points at a Redis (scripts/test.sh sets one up).

EXTENSION = redlock
MODULE_big = redlock
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA = $(sort $(wildcard sql/$(EXTENSION)--*.sql))
SHLIB_LINK = -lhiredis -lssl -lcrypto

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers

# Regression tests live in test/sql; their expected output in expected/.
# pg_regress 15 reads both from one --inputdir (16 adds --expecteddir),
# so test/expected is a link to ../expected.
REGRESS = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
REGRESS_OPTS = --inputdir=test
ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test

# No JIT bitcode: it would need clang at build time and gains nothing here.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: every module includes the shared ones.
$(OBJS): src/redlock.h src/redis.h
