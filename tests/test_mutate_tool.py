"""tools/mutate.py draws real mutants only: never an annotation, nor anything a type checker alone reads."""

import os
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.version_info < (3, 8), reason="the tool needs node end positions (3.8+)")

SOURCE = b'''TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal
    Status = Literal["ready", "failed"]
    LIMIT = 5


class Value:
    status: "Status"
    size: "int" = 3


def word(status: "Status" = "ready") -> "str":
    kept: "str" = "kept"
    return status + kept
'''


def _mutants():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    try:
        import mutate
    finally:
        sys.path.pop(0)
    lines = SOURCE.splitlines(True)
    return [m.describe(lines) for m in mutate.find_mutants(SOURCE)]


def test_annotations_and_type_checking_blocks_are_never_mutated():
    changes = _mutants()
    assert not [c for c in changes if c.startswith(("L3 ", "L4 ", "L5 ", "L9 "))], changes
    for change in changes:  # an annotation is never emptied: each is still there after the change
        before, after = change.split(": ", 1)[1].split("` -> `")
        for annotation in ('"Status"', '"str"', '"int"'):
            assert after == "pass`" or before.count(annotation) == after.count(annotation), change
    # what does run is still mutated: the `if` itself, the default value, the assigned values, the return
    assert "L2 if: `if TYPE_CHECKING:` -> `if not (TYPE_CHECKING):`" in changes
    assert 'L13 string: `def word(status: "Status" = "ready") -> "str":` -> ' \
           '`def word(status: "Status" = "") -> "str":`' in changes
    assert 'L14 string: `kept: "str" = "kept"` -> `kept: "str" = ""`' in changes
    assert "L10 number: `size: \"int\" = 3` -> `size: \"int\" = 4`" in changes
    assert any(c.startswith("L15 return") for c in changes)
