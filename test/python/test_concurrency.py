"""Many clients run the sneaker drop's read-check-write at once.

Without the lock the stock is oversold (the control run shows the race the
lock is for); with redlock_acquire exactly the stock is sold, every time.
"""

import os
import threading

import pytest

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "sneaker_drop.sql")
STOCK = 10
BUYERS = 40


@pytest.fixture
def shop(session):
    s = session()
    s.execute("DROP TABLE IF EXISTS orders, stock CASCADE")
    s.execute("DROP PROCEDURE IF EXISTS place_order(text, text, boolean)")
    with open(EXAMPLE) as f:
        s.execute(f.read())
    return s


def run_drop(session, shop, use_lock):
    """BUYERS concurrent orders for STOCK pairs; returns (sold, left)."""
    shop.execute("TRUNCATE orders")
    shop.execute("INSERT INTO stock VALUES ('sneaker-42', %s) "
                 "ON CONFLICT (sku) DO UPDATE SET qty = EXCLUDED.qty", (STOCK,))
    buyers = [session() for _ in range(BUYERS)]
    start = threading.Barrier(BUYERS)
    errors = []

    def buy(i):
        try:
            start.wait()
            buyers[i].execute("CALL place_order('sneaker-42', %s, %s)",
                              (f"customer-{i}", use_lock))
        except Exception as e:          # reported below, not swallowed
            errors.append(e)

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(BUYERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for b in buyers:
        b.close()
    assert errors == []
    sold = shop.value("SELECT count(*) FROM orders")
    left = shop.value("SELECT qty FROM stock WHERE sku = 'sneaker-42'")
    return sold, left


def test_without_lock_the_stock_is_oversold(session, shop):
    sold, left = run_drop(session, shop, use_lock=False)
    assert sold > STOCK, "the control run should show the race"
    assert left >= 0


def test_with_redlock_exactly_the_stock_is_sold(session, shop, main_redis):
    for _ in range(3):
        sold, left = run_drop(session, shop, use_lock=True)
        assert (sold, left) == (STOCK, 0)
    assert not main_redis.exists("stock:sneaker-42"), "released after the last order"
