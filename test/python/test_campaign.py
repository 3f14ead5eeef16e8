"""The short, seeded form of the fault campaign (test/campaign/campaign.py;
the long form is bench/campaign.sh): every fault kind, 16 clients on hot
keys, three masters.  With redlock, the committed transactions lose no
update, oversell nothing, run no job twice and carry fencing tokens in
commit order, except where one of the two limits the README names (a
clock stepped ahead under a bare majority; a majority of fencing counters
behind after an empty restart) explains the case, which the report then
shows; no client gets stuck, throughput comes back within 5 TTL of every
heal and Redis keeps no lock key.  Without a lock (the control) the same
run loses updates, which shows the checker sees what it looks for."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "campaign"))
import campaign  # noqa: E402

SECONDS = 30
SEED = 20261203
DBNAME = "redlock_campaign_short"      # not the long form's


def test_short_campaign():
    campaign.prepare_database(DBNAME)
    text, results = campaign.campaign(DBNAME, seed=SEED, seconds=SECONDS,
                                      clients=16, masters=3, keys=4, ttl=2000,
                                      modes=("redlock", "none"))
    print(text)
    by_mode = {r["mode"]: r for r in results}
    locked, control = by_mode["redlock"], by_mode["none"]

    assert set(locked["faults"]) == set(campaign.FAULTS), text      # each kind, at least once
    assert locked["outcomes"].get("committed", 0) > 100, text
    safety = sum(locked["violations"].get(kind, 0) for kind in
                 ("lost_updates", "oversold", "duplicate_jobs", "token_order"))
    if safety:      # each one is a case the forensics found and a named limit explains
        assert locked["cases"] > 0 and locked["unexplained"] == 0, text
    for kind in ("keys_left", "stuck_clients", "slow_transactions"):
        assert locked["violations"].get(kind, 0) == 0, f"{kind}\n{text}"
    for kind in ("other", "crashed"):
        assert locked["outcomes"].get(kind, 0) == 0, f"{kind}\n{text}"
    assert locked["max_recovery_s"] <= 10.0, text

    # the control: the same work and faults without the lock lose updates
    assert control["violations"].get("lost_updates", 0) > 0, text
