@faults
Feature: Faults: the SBC or a hub proxy going away
  An SBC restarts (a crash, an upgrade) with calls up. It has forgotten
  them: it says it is back to the hub at once with OPTIONS rather than
  after its 60 s cycle, with identifiers it never used before, answers
  what still comes for those calls 481 (RFC 3261 §12.2.2), and both far
  ends clear them: the carrier on that 481 to its BYE, the hub when no
  media comes (behaviour §3.4, about 15 s).

  A hub proxy crashes with a call in setup: the SBC's TLS connection to it
  closes, and the INVITE on it fails at once rather than waiting for a
  response that can no longer come (after a provisional, RFC 3261 has no
  timer left to end it). Before anything rang, the SBC fails over to the
  next proxy; once the caller heard ringing, it ends the call with 503
  rather than ring the Teams user anew. Nothing is left held anywhere.

  A far end goes away with a call up (a hub proxy crashes or is cut off,
  the carrier's gateway crashes): the other side's BYE is answered at
  once, and the SBC's own BYE towards the gone side is given up when its
  connect or its transaction times out; the call is let go, not held.

  Scenario: The SBC restarts with a call up: OPTIONS at once, and both far ends clear the call
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When the SBC restarts
    Then the SBC sends OPTIONS to every hub proxy within 1 s of its restart
    When the PSTN caller hangs up
    Then the SBC answers the carrier's BYE with 481
    And the hub ends the call for lack of media about 15 seconds after the restart, and the SBC answers its BYE with 481

  Scenario: A hub proxy crashes while the Teams user rings: the PSTN caller is told, nothing is left
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    And Teams users answer 30 s after ringing
    When PSTN caller +4930123456 calls +4989000001
    Then the PSTN caller hears ringing
    When the hub proxy sip.pstnhub.microsoft.com crashes
    And 10 seconds pass
    Then the PSTN caller hears 503
    When the hub proxy sip.pstnhub.microsoft.com comes back

  Scenario: A hub proxy crashes right after the SBC's INVITE: the SBC fails over to the next proxy
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the SBC sends the INVITE to sip.pstnhub.microsoft.com with user=phone and E.164 numbers
    When the hub proxy sip.pstnhub.microsoft.com crashes
    Then the SBC sends the INVITE to sip2.pstnhub.microsoft.com with user=phone and E.164 numbers
    And the Teams user answers
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    When the hub proxy sip.pstnhub.microsoft.com comes back

  Scenario: Heavy loss on the carrier leg, 30 % both ways on signalling and audio: the call still sets up and ends cleanly
    # SIP over UDP retransmits (Timers A, E, G: RFC 3261 §17); audio is
    # not retransmitted, and the voice quality says so.
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    And the link between the carrier and the SBC loses 30 % of packets
    And the link between the SBC and phone-4930123456.carrier.example.net loses 30 % of packets
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And over 20 s audio flows both ways with 20 to 45 % of frames lost
    And the Teams side hears the other side with MOS below 3.0
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: A hub proxy crashes with a call up: the caller's BYE is answered at once, the SBC lets the call go when it cannot reach the proxy
    # The SBC's TLS connection to the proxy is gone, and a new connect to
    # a host that is down gets no answer at all: the SBC gives the connect
    # up after 4 s, which fails the BYE and ends that dialog (RFC 3261
    # §15.1.1) rather than holding it. The hub forgot the call in its crash.
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    When the hub proxy sip.pstnhub.microsoft.com crashes
    And the PSTN caller hangs up
    Then the SBC answers the carrier's BYE with 200
    And the SBC lets the call go about 4 s later, when its connect for the BYE times out
    When the hub proxy sip.pstnhub.microsoft.com comes back

  Scenario: The link to a hub proxy goes down with a call up: the BYE waits, is given up after 32 s, and every party clears the call
    # TCP holds what is sent on a cut link; the SBC's BYE over it gets no
    # answer, and its transaction gives up after Timer F (64·T1). The hub
    # meanwhile ends its side for lack of media.
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    When the link between the SBC and sip.pstnhub.microsoft.com goes down for 60 s
    And the PSTN caller hangs up
    Then the SBC answers the carrier's BYE with 200
    And the SBC's BYE to the hub goes unanswered, and the SBC lets the call go about 32 s after sending it

  Scenario: The carrier gateway goes away with a call up: the Teams user's BYE is answered at once, the BYE to the carrier is given up after 32 s
    # Over UDP the SBC resends its BYE (Timer E) until Timer F.
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the phone rings
    And the phone answers
    And audio flows both ways, decrypted and in order
    When the carrier gateway goes away
    And the Teams user hangs up
    Then the SBC answers the hub's BYE with 200
    And the SBC's BYE to the carrier goes unanswered, and the SBC lets the call go about 32 s after sending it
    When the carrier gateway comes back
