"""psycopg2 and SQLAlchemy: take the lock with the first statement of the
transaction; commit releases it once the commit is visible.  Lock timeouts
(55P03) and commits that lost their lock (40001) are retried.

Run: PG* environment set, python3-psycopg2 and python3-sqlalchemy installed:
    python3 python_clients.py
"""

import os
import threading
import time

import psycopg2
from sqlalchemy import Column, Integer, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, declarative_base

RETRY = {"55P03", "40001"}


def with_lock_psycopg2(dsn, key, work, attempts=5):
    """Run work(cursor) in a transaction that holds the Redis lock key."""
    for attempt in range(1, attempts + 1):
        conn = psycopg2.connect(dsn)
        try:
            with conn:                  # commits at the end, or rolls back
                with conn.cursor() as cur:
                    cur.execute("SELECT redlock_acquire(%s, NULL, 5000)", (key,))
                    return work(cur)
        except psycopg2.Error as e:
            if e.pgcode not in RETRY or attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
        finally:
            conn.close()


Base = declarative_base()


class Counter(Base):
    __tablename__ = "example_counter"
    id = Column(Integer, primary_key=True)
    n = Column(Integer, nullable=False)


def with_lock_sqlalchemy(engine, key, work, attempts=5):
    """Run work(session) in an ORM transaction that holds the Redis lock key."""
    for attempt in range(1, attempts + 1):
        try:
            with Session(engine) as session, session.begin():
                session.execute(text("SELECT redlock_acquire(:key, NULL, 5000)"), {"key": key})
                return work(session)
        except DBAPIError as e:
            if getattr(e.orig, "pgcode", None) not in RETRY or attempt == attempts:
                raise
            time.sleep(0.05 * attempt)


def increment_psycopg2(cur):
    cur.execute("SELECT n FROM example_counter WHERE id = 1")
    n = cur.fetchone()[0]
    time.sleep(0.005)
    cur.execute("UPDATE example_counter SET n = %s WHERE id = 1", (n + 1,))


def increment_orm(session):
    counter = session.get(Counter, 1)
    time.sleep(0.005)
    counter.n = counter.n + 1


def main():
    # more tries where a backend is very slow (the test suite under valgrind)
    attempts = int(os.environ.get("EXAMPLE_ATTEMPTS", "5"))
    engine = create_engine("postgresql+psycopg2://", pool_size=8)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS example_counter "
                          "(id int PRIMARY KEY, n int NOT NULL)"))
        conn.execute(text("INSERT INTO example_counter VALUES (1, 0) "
                          "ON CONFLICT (id) DO UPDATE SET n = 0"))
    threads = [threading.Thread(target=with_lock_psycopg2,
                                args=("", "counter:1", increment_psycopg2, attempts))
               for _ in range(8)]
    threads += [threading.Thread(target=with_lock_sqlalchemy,
                                 args=(engine, "counter:1", increment_orm, attempts))
                for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(engine) as session:
        print(f"counter = {session.get(Counter, 1).n}")


if __name__ == "__main__":
    main()
