"""SYN cookies: answer a SYN without keeping state, and recognise the packet that confirms it.

uTP's handshake gives an acceptor 16 bits the initiator must echo: the SYN-ACK's
``seq_nr`` (our initial sequence number) comes back as ``ack_nr + 1`` in every
packet the initiator sends next. A cookie makes those 16 bits a keyed MAC of the
peer's address, the connection id, the initiator's initial sequence number and a
time slot, so the connection can be created only when a packet proves that the
peer saw our SYN-ACK (RFC 4987 §3.6, on uTP's wire; neither libutp nor libtorrent
has this).

Every slot gets a fresh random key and only the current and the previous slot
verify, so a cookie lives between one and two slots (64 to 128 s: longer than a
libutp initiator's 29 s wait before its first keep-alive). A forged confirming
packet passes with odds of about 4 in 65,536 (two slots, and the two ``ack_nr``
forms below); what it gains is one connection, charged to its source address like
any other.

The packets that confirm, and what they tell us:

* a txutp initiator's ACK (``ST_STATE``) and a libutp or libtorrent initiator's
  first DATA or FIN: ``seq_nr`` is the SYN's plus one, ``ack_nr`` is our ISN - 1;
* a libutp initiator's keep-alive (``ST_STATE``): ``ack_nr`` is our ISN - 2.

A DATA packet that overtook the first carries a later ``seq_nr``: it is recognised
(up to ``LOOK_AHEAD`` packets ahead) and dropped without the RESET that would kill a
genuine connection; the peer resends the first packet, which then confirms. Data
lands at a wrong offset only if such a packet also matches as the first one, with
the odds of a forgery.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ._packet import SEQ_MASK

__all__ = ["COOKIE_SLOT", "LOOK_AHEAD", "SynCookies"]

#: Seconds per cookie slot: a cookie verifies during its own slot and the next.
COOKIE_SLOT = 64.0
#: How many DATA packets past the first a packet may be and still be known as a cookie's.
LOOK_AHEAD = 3


class SynCookies:
    """Issue and check SYN cookies; keys come from ``random_bits`` and change every slot."""

    __slots__ = ("_macs", "_random_bits", "issued_until")

    def __init__(self, random_bits: Callable[[int], int]) -> None:
        self._random_bits = random_bits
        #: A keyed BLAKE2s per slot (copied for each MAC: cheaper than keying anew).
        self._macs: dict[int, Any] = {}
        #: Until when a cookie we issued may still come back (no checks are needed after).
        self.issued_until = float("-inf")

    def _slot_mac(self, slot: int) -> Any:
        macs = self._macs
        mac = macs.get(slot)
        if mac is None:
            for old in [s for s in macs if s < slot - 1]:
                del macs[old]
            key = self._random_bits(128).to_bytes(16, "big")
            mac = macs[slot] = hashlib.blake2s(key=key, digest_size=2)
        return mac

    @staticmethod
    def _peer(mac: Any, addr: Any, recv_id: int) -> Any:
        """The slot's MAC with the peer's address and connection id absorbed."""
        peer = mac.copy()
        peer.update(b"%b|%d|" % (repr(addr).encode(), recv_id & SEQ_MASK))
        return peer

    @staticmethod
    def _isn(peer: Any, syn_seq: int) -> int:
        h = peer.copy()
        h.update((syn_seq & SEQ_MASK).to_bytes(2, "big"))
        return int.from_bytes(h.digest(), "big")

    def issue(self, addr: Any, recv_id: int, syn_seq: int, now: float) -> int:
        """The initial sequence number for a stateless SYN-ACK to ``addr``'s SYN."""
        slot = int(now // COOKIE_SLOT)
        self.issued_until = (slot + 2) * COOKIE_SLOT
        return self._isn(self._peer(self._slot_mac(slot), addr, recv_id), syn_seq)

    def check(
        self, addr: Any, recv_id: int, seq_nr: int, ack_nr: int, keepalive_form: bool, now: float
    ) -> tuple[int, int] | None:
        """``(our ISN, packets ahead)`` if a packet ``(seq_nr, ack_nr)`` from ``addr`` returns a cookie.

        ``ahead`` is 0 for the packet right after the SYN, which confirms; 1 to
        ``LOOK_AHEAD`` for a later DATA packet that overtook it (not to be answered
        with RESET: the peer is genuine and resends the first). ``keepalive_form``
        also accepts libutp's keep-alive (``ack_nr`` one lower); pass it for
        ``ST_STATE`` packets only, which carry the next sequence number and so are
        never ahead.
        """
        if now >= self.issued_until:
            return None
        slot = int(now // COOKIE_SLOT)
        first = (ack_nr + 1) & SEQ_MASK
        keepalive = (ack_nr + 2) & SEQ_MASK if keepalive_form else -1
        last = 0 if keepalive_form else LOOK_AHEAD
        for s in (slot, slot - 1):
            mac = self._macs.get(s)
            if mac is None:
                continue
            peer = self._peer(mac, addr, recv_id)
            for ahead in range(last + 1):
                isn = self._isn(peer, seq_nr - 1 - ahead)
                if isn == first or (isn == keepalive and not ahead):
                    return isn, ahead
        return None
