"""The README cannot rot: every code block in it is either an excerpt of a
file in examples/ (which test_examples.py runs) or says why it is not run
(shell commands, configuration, sample output, diagrams)."""

import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FENCE = re.compile(r"^(\s*)```")
MARK = re.compile(r"^\s*<!-- (example: (?P<file>\S+)|not executed: .+) -->\s*$")


def blocks():
    """(line number, marker line, block text) for each fenced block."""
    lines = open(os.path.join(ROOT, "README.md")).read().split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent = len(m.group(1))
        start = i
        i += 1
        body = []
        while not FENCE.match(lines[i]):
            body.append(lines[i][indent:])
            i += 1
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        yield start + 1, lines[prev], "\n".join(body)
        i += 1


def squeeze(text):
    return re.sub(r"\s+", " ", text).strip()


def test_every_block_is_an_example_or_says_why_not():
    found = list(blocks())
    assert len(found) > 20
    for line, marker, body in found:
        m = MARK.match(marker)
        assert m, f"README.md:{line}: code block without an example or not-executed marker"
        if m.group("file"):
            path = os.path.join(ROOT, m.group("file"))
            assert os.path.exists(path), f"README.md:{line}: no file {m.group('file')}"
            assert squeeze(body) in squeeze(open(path).read()), \
                f"README.md:{line}: the block is not an excerpt of {m.group('file')}"


def test_every_example_is_run_by_the_tests():
    tests = open(os.path.join(os.path.dirname(__file__), "test_examples.py")).read()
    tests += open(os.path.join(os.path.dirname(__file__), "test_concurrency.py")).read()
    tests += open(os.path.join(os.path.dirname(__file__), "test_commit_safety.py")).read()
    for dirpath, _, files in os.walk(os.path.join(ROOT, "examples")):
        for f in files:
            assert f in tests, f"examples/{f} is run by no test"
