#!/usr/bin/env bash
# The sneaker drop, the race redlock exists for.  On a fresh Debian 12
# machine, as root:
#
#     scripts/demo.sh
#
# installs what is missing, builds and installs the extension, starts a
# throwaway PostgreSQL cluster and Redis on loopback, runs 50 concurrent
# orders for 10 pairs of sneakers through examples/sneaker_drop.sql, first
# without a lock and then with redlock_acquire, and stops the servers.
source "$(dirname "$0")/lib.sh"
setup

STOCK=10
BUYERS=25			# concurrent clients, two orders each
ORDERS=$((BUYERS * 2))

psql -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION redlock" \
	-f "$ROOT/examples/sneaker_drop.sql"
cat >"$RUN_DIR/order.sql" <<'SQL'
\set customer random(1, 1000000)
CALL place_order('sneaker-42', 'customer-' || :customer, :use_lock);
SQL

# drop USE_LOCK: reset the stock, let the buyers in, report what was sold
drop() {
	psql -X -q -c "TRUNCATE orders" \
		-c "INSERT INTO stock VALUES ('sneaker-42', $STOCK)
		    ON CONFLICT (sku) DO UPDATE SET qty = EXCLUDED.qty"
	"$PG_BIN/pgbench" -n -c "$BUYERS" -j 2 -t 2 -D use_lock="$1" \
		-f "$RUN_DIR/order.sql" >"$RUN_DIR/pgbench-$1.log" 2>&1
	SOLD=$(psql -X -At -c "SELECT count(*) FROM orders")
}

say "the sneaker drop: $STOCK pairs, $ORDERS orders from $BUYERS buyers at once"
echo "place_order() reads the stock, waits 10 ms for the payment service,"
echo "then writes the stock back and records the order (examples/sneaker_drop.sql)."

drop false
printf '\n  without a lock:  %3d orders accepted for %d pairs  -> oversold by %d\n' \
	"$SOLD" "$STOCK" "$((SOLD - STOCK))"
[ "$SOLD" -gt "$STOCK" ] || echo "  (no oversell this time: the race is timing-dependent; run again)"

drop true
printf '  with redlock:    %3d orders accepted for %d pairs  -> %d orders turned away: sold out\n' \
	"$SOLD" "$STOCK" "$((ORDERS - SOLD))"

echo
echo "With use_lock, place_order() first runs"
echo "    PERFORM redlock_acquire('stock:' || p_sku);"
echo "The Redis lock is released after the order's COMMIT is visible, so the"
echo "next buyer reads the stock this one left."
[ "$SOLD" -eq "$STOCK" ]
