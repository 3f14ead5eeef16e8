#!/usr/bin/env bash
# The fault campaign (test/campaign/campaign.py): clients doing real work
# under locks while a nemesis freezes, crashes, partitions, slows and
# clock-jumps masters and pauses, cancels and terminates backends; a
# checker then looks for lost updates, oversold stock, jobs run twice,
# fencing tokens out of order, keys left in Redis and stuck clients.  As
# root on Debian 12:
#
#     bench/campaign.sh [--seconds 600] [--seed 1] [--clients 16] [--masters 3]
#                       [--keys 4] [--ttl 2000] [--modes redlock,none,client]
#                       [--control-seconds N]
#
# Sets up like the tests (scripts/lib.sh), runs each mode for --seconds
# with the same seeded fault schedule, and prints the report table.  The
# test suite runs a short form (test/python/test_campaign.py).
source "$(dirname "$0")/../scripts/lib.sh"
setup
cd "$ROOT/test/campaign" && /usr/bin/python3 campaign.py "$@"
