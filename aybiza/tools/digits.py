"""Collecting keypad digits: N digits, or up to a terminator, with a timeout between keys.

:class:`DigitCollection` is one attempt: keys arrive with :meth:`key` (from
the call's ``DTMF`` frames: Twilio's inbound ``dtmf`` events, or the browser
page's keypad), and the caller may answer in words instead (:meth:`speech`,
a caller turn that arrived while collecting). :meth:`wait` returns once the
terminator is pressed, ``max_digits`` are in, the caller spoke, or
``timeout_s`` passed without a key (the clock restarts at every key, so a
slow typist is not cut off). The toolbox re-prompts after an attempt that
got nothing.
"""

from __future__ import annotations

import anyio

__all__ = ["DigitCollection"]


class DigitCollection:
    """One attempt at collecting digits."""

    __slots__ = ("max_digits", "terminator", "digits", "terminated", "spoken", "_changed")

    def __init__(self, *, max_digits: int, terminator: str = "#") -> None:
        self.max_digits = max_digits
        self.terminator = terminator
        self.digits = ""
        self.terminated = False
        self.spoken: str | None = None
        self._changed = anyio.Event()

    @property
    def done(self) -> bool:
        """Terminated, full, or answered in words."""
        return self.terminated or len(self.digits) >= self.max_digits or self.spoken is not None

    @property
    def got_something(self) -> bool:
        """Whether the caller pressed anything (the terminator alone counts) or spoke."""
        return bool(self.digits) or self.terminated or self.spoken is not None

    def key(self, digit: str) -> None:
        """A key was pressed."""
        if self.done:
            return
        if self.terminator and digit == self.terminator:
            self.terminated = True
        else:
            self.digits += digit
        self._changed.set()

    def speech(self, text: str) -> None:
        """The caller said ``text`` instead of typing."""
        if not self.done:
            self.spoken = text
            self._changed.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait until done (True) or ``timeout_s`` without a key (False)."""
        while not self.done:
            self._changed = anyio.Event()
            with anyio.move_on_after(timeout_s):
                await self._changed.wait()
            if not self._changed.is_set():
                return self.done
        return True
