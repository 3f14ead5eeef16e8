-- The limited-stock race: a sneaker drop.
--
-- Ten pairs, many buyers at once, and an order procedure that reads the
-- stock, decides, and writes it back -- the read-check-write that many
-- services do across a network call (payment, pricing, fraud checks).  Two
-- buyers who read the same count both sell "the last pair".  With
-- use_lock, the sequence runs under a Redis lock on the SKU that is held
-- until the order's transaction has committed, so the next buyer reads the
-- stock this one left.  Any other service that takes the same key with
-- node-redlock, redsync or redis-py is excluded as well.

CREATE TABLE stock (
    sku  text PRIMARY KEY,
    qty  integer NOT NULL
);

CREATE TABLE orders (
    id        bigserial PRIMARY KEY,
    sku       text NOT NULL,
    customer  text NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT now()
);

CREATE PROCEDURE place_order(p_sku text, p_customer text, use_lock boolean)
LANGUAGE plpgsql AS $$
DECLARE
    left_in_stock integer;
BEGIN
    IF use_lock THEN
        PERFORM redlock_acquire('stock:' || p_sku);
    END IF;

    SELECT qty INTO left_in_stock FROM stock WHERE sku = p_sku;
    PERFORM pg_sleep(0.01);             -- the payment service answers
    IF left_in_stock > 0 THEN
        UPDATE stock SET qty = left_in_stock - 1 WHERE sku = p_sku;
        INSERT INTO orders (sku, customer) VALUES (p_sku, p_customer);
    END IF;
END
$$;
