"""Which RESETs a connection believes: RFC 5961's exact match and challenge ACK, on uTP's wire.

libutp and libtorrent answer a packet of a connection they no longer know with
a RESET whose ``ack_nr`` is that packet's ``seq_nr``: our newest DATA or FIN
(``next_seq - 1``), our ACKs (which carry ``next_seq``) and our last challenge
qualify. An aborting txutp peer's RESET carries its next ``seq_nr``, exact when
it is the one we expect (RFC 5961 §3.2's ``SEQ == RCV.NXT``). Any other RESET
within the window draws a challenge ACK (at most one per RTT, 50 ms to 1 s),
which a peer that really forgot us answers exactly one round trip later. A
blind RESET must hit one of four values instead of a whole window.
"""

from __future__ import annotations

from ._packet import SEQ_MASK

__all__ = ["ResetValidator"]


class ResetValidator:
    """One connection's RESET check and its challenge-ACK state."""

    __slots__ = ("challenge_seq", "challenged", "_challenge_at")

    def __init__(self) -> None:
        #: The ``seq_nr`` our last challenge ACK carried, or ``None``.
        self.challenge_seq: int | None = None
        #: Challenges sent (``ConnectionStats.resets_challenged``).
        self.challenged = 0
        self._challenge_at = -1e9

    def is_exact(self, ack_nr: int, seq_nr: int, *, next_seq: int, expected_seq: int) -> bool:
        """Is a RESET (already within the window) exact? ``expected_seq`` is the peer's next in-order ``seq_nr``."""
        return (
            ack_nr == next_seq
            or ack_nr == (next_seq - 1) & SEQ_MASK
            or ack_nr == self.challenge_seq
            or seq_nr == expected_seq
        )

    def challenge(self, next_seq: int, srtt: float | None, now: float) -> bool:
        """An inexact RESET arrived: return whether to send a challenge ACK now (rate-limited to one per RTT)."""
        if now - self._challenge_at < min(max(srtt or 1.0, 0.05), 1.0):
            return False
        self._challenge_at = now
        self.challenge_seq = next_seq  # the seq_nr of our next packet, ACK or DATA
        self.challenged += 1
        return True
