"""User-facing error text: library messages are quoted by their first line, never crash when empty."""

from slimkit.errors import first_line


def test_first_line_of_multiline_and_empty_messages():
    assert first_line(RuntimeError("bad op Foo\n  at node 3\n  stack ...")) == "bad op Foo"
    assert first_line(RuntimeError("")) == "RuntimeError"  # an empty message used to raise IndexError
    assert first_line(ValueError("x" * 500), 40) == "x" * 40
