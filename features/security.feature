@security
Feature: Floods and hostile traffic against the SBC
  An SBC sits on the public internet. A scanner's INVITE flood, a carrier
  gateway gone wild, RTP sprayed at its media ports: the calls it holds
  keep their audio and a new call still completes, its ACK in time (the hub
  drops a call whose 200 is not ACKed). New requests pass a gate per
  source address before any transaction exists: an unknown source over a
  small rate is dropped and counted (answering a flood amplifies it); a
  carrier gateway or hub proxy over its rate gets 503 with Retry-After
  (RFC 3261 §21.5.4). The relay takes media only from the address a leg
  signalled or latched to. These scenarios keep no trace snapshot: the
  flood's thousands of messages are left out of the trace, so the ladder
  shows the calls only.

  Scenario: An INVITE flood from an unknown host: the call up keeps its audio, a new call completes
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the phone answers
    When an unknown host sends the SBC 500 INVITEs a second for 20 s
    And 3 seconds pass
    Then audio flows both ways, decrypted and in order
    And the PSTN phone hears the other side with MOS above 4.3
    When the Teams user hangs up
    Then both legs end with BYE and 200
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    And the SBC routed none of the flood's INVITEs
    And the SBC dropped at least 9900 of the flood's requests and answered at most 60, each with 403

  Scenario: A carrier gateway gone wild: 503 with Retry-After beyond its rate, other calls unharmed
    Given the SBC takes calls from the flooding host as a carrier gateway
    And the SBC admits at most 5 INVITEs a second from each carrier address
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the phone answers
    When the flooding carrier gateway sends the SBC 200 INVITEs a second for 10 s
    And 3 seconds pass
    Then audio flows both ways, decrypted and in order
    When the Teams user hangs up
    Then both legs end with BYE and 200
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    And the SBC answered the flood's excess INVITEs with 503 and Retry-After: at least 1900 of them

  Scenario: An SBC holding max_calls answers the next INVITE 503 with Retry-After
    Given the SBC holds at most 1 call
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the phone answers
    When a carrier sends the SBC an INVITE for +4989000002
    Then the SBC answers it with 503
    And the SBC's answer carries Retry-After: 5
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: RTP sprayed at the call's media ports from off its path is dropped; the audio stays intact
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the phone answers
    When an off-path host sprays RTP at the SBC's media ports of the call, 500 packets a second for 5 s
    And 3 seconds pass
    # Half the spray goes to the RTCP neighbours, which the relay keeps
    # free and does not open (RFC 3550 §11): nothing there to drop.
    Then audio flows both ways, decrypted and in order
    And the SBC's relay dropped at least 1200 packets from foreign addresses
    And the PSTN phone hears the other side with MOS above 4.3
    And the Teams side hears the other side with MOS above 4.3
    When the Teams user hangs up
    Then both legs end with BYE and 200

  @faults
  Scenario: While no hub proxy answers its OPTIONS, the SBC answers the carrier's OPTIONS with 503
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When the carrier sends the SBC OPTIONS
    Then the SBC answers the carrier's OPTIONS with 200
    When every hub proxy goes down
    And 100 seconds pass
    And the carrier sends the SBC OPTIONS
    Then the SBC answers the carrier's OPTIONS with 503
    And the SBC's answer carries Retry-After: 5
    When every hub proxy comes back
    And 70 seconds pass
    And the carrier sends the SBC OPTIONS
    Then the SBC answers the carrier's OPTIONS with 200
